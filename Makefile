# Two entry points for a fresh machine (see README): `make repro` and `make test`.
# Both create .venv if it is missing and install the pinned dependencies into it.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup browser services repro test bench bench-deps ui lab-up lab-down lab-status clean-venv

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

# The page template `dvc plots show` fills (.dvc/config: plots.html_template), with Vega inlined: renders offline.
PLOTS_PAGE := .dvc/plots.html
$(PLOTS_PAGE): src/ganlab/report/plots_page.py $(STAMP)
	$(BIN)/ganlab plots-page $@

setup: $(STAMP) $(PLOTS_PAGE)

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# The MLflow UI test drives Debian's Chromium; as root we install it, otherwise we say how.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "make test needs Chromium for the MLflow UI test: sudo apt-get install chromium" >&2; exit 1; }

# The lab's services and the sweep test's one-node cluster: Debian's postgresql, socat (the S3 gateway's one door),
# slurm-wlm and munge; as root we install what is missing, otherwise we say how.
SERVICES_MISSING = $(strip $(if $(wildcard /usr/lib/postgresql/*/bin/initdb),,postgresql) \
	$(if $(shell command -v socat),,socat) \
	$(if $(shell command -v slurmctld),,slurm-wlm) $(if $(shell command -v munged),,munge))
services:
	@[ -z "$(SERVICES_MISSING)" ] || { [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SERVICES_MISSING) >/dev/null; } || \
	  { echo "the lab and its tests need Debian packages: sudo apt-get install $(SERVICES_MISSING)" >&2; exit 1; }

test: setup browser services
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

# A lab's shared services on this machine (docs/team.md): PostgreSQL, S3 (SeaweedFS), MLflow server.
# Settings: GANLAB_LAB_* environment variables; secrets are generated into the lab folder on the first lab-up.
lab-up: setup services
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ganlab lab up

lab-down: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ganlab lab down

lab-status: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ganlab lab status

# Browse every run: the MLflow UI on this repository's store, on http://127.0.0.1:5000; prints the link to the
# training runs table (MLflow 3.17 opens every visitor in GenAI mode; the link's workflowType leaves it).
ui: setup  # `mlflow ui` on the store, opening in model-training mode (ganlab.tracking.ui)
	$(BIN)/ganlab ui --host 127.0.0.1 --port 5000

# The speed suite on this machine's GPU (or CPU): bench/results/<device>.json and a table (bench/README.md).
bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py

# For a GPU machine that has torch but not ganlab's other dependencies: the few pure-Python packages
# bench/run.py imports, copied from .venv into bench/.deps (same Python version there); carry that folder.
bench-deps: setup
	rm -rf bench/.deps && mkdir -p bench/.deps
	cd $(VENV)/lib/python3.11/site-packages && cp -r pydantic pydantic_core annotated_types typing_inspection \
	  typing_extensions.py yaml tqdm $(CURDIR)/bench/.deps/

clean-venv:
	rm -rf $(VENV)
