# Two entry points for a fresh machine (see README): `make repro` and `make test`.
# Both create .venv if it is missing and install the pinned dependencies into it.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup repro test bench ui clean-venv

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/train_cpu.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/pack_celeba.py

clean-venv:
	rm -rf $(VENV)
