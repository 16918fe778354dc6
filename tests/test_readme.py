"""Every code block of README.md is marked (a comment line above it): `run` blocks run here, offline, in a tiny
copy of the pipeline with trained runs and an experiment named `bce` (conftest's gaussian_experiments); `output`
blocks are shown output; `not run in the suite: why` blocks would download or train for hours."""

import json
import os
import re
import subprocess
import sys

import pytest

from helpers import REPO, env

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
MARK = re.compile(r"<!-- readme: (run|output|not run in the suite: .+?) -->\n\n?$")


def blocks() -> list[tuple[str, str, str]]:
    """(mark, language, code) of each fenced block; a block without a mark fails the test that reads them."""
    text = (REPO / "README.md").read_text()
    found = []
    for m in FENCE.finditer(text):
        mark = MARK.search(text[:m.start()][-200:])
        assert mark, f"README.md: the block at line {text[:m.start()].count(chr(10)) + 1} has no readme: mark"
        found.append((mark[1], m[1], m[2]))
    return found


def test_every_readme_block_is_marked():
    kinds = [mark.split(":")[0] for mark, _, _ in blocks()]
    assert kinds.count("run") >= 2 and "output" in kinds


@pytest.mark.e2e
def test_the_runnable_readme_blocks_run_offline(gaussian_experiments):
    """In conftest's repository of gaussian_2d experiments (one is named bce); RUN_ID: a training run there."""
    variant, root = "gaussian_2d", gaussian_experiments  # the toy: seconds of training
    train = json.loads((root / "metrics" / variant / "train.json").read_text())  # h2: two seeds, a run each
    run_id = train["per_seed"]["1"]["run_id"]  # a seed's run holds its generator (the parent's says so: below)
    e = env() | {"RUN_ID": run_id}
    todo = [(lang, code) for mark, lang, code in blocks() if mark == "run"]
    log = []  # what each block printed, for a person to read: test-artifacts/readme_blocks.txt
    for lang, code in todo:
        cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        proc = subprocess.run(cmd, cwd=root, env=e, capture_output=True, text=True, timeout=300)
        log.append(f"$ {code}\n{proc.stdout}{proc.stderr}")
        (REPO / "test-artifacts").mkdir(exist_ok=True)
        (REPO / "test-artifacts" / "readme_blocks.txt").write_text("\n".join(log))
        assert proc.returncode == 0, f"README block failed:\n{code}\n{proc.stdout}\n{proc.stderr}"
        assert "WARNING" not in proc.stderr, proc.stderr  # nothing a user cannot act on
        if "ganlab exps" in code:
            lines = proc.stdout.split("\nPath")[0].splitlines()  # up to the first `dvc ... diff` table
            assert max(map(len, lines)) <= 80 and any(x.startswith("bce  ") for x in lines), proc.stdout
            assert any(x.split()[:1] == [variant] for x in lines), proc.stdout
    assert len(todo) >= 2 and os.environ.get("RUN_ID") is None
    # the parent run of a multi-seed variant holds no model: loading it names the seeds' runs instead
    parent = subprocess.run([sys.executable, "-c", "import os; from ganlab.tracking import load_generator; "
                             "load_generator(os.environ['RUN_ID'])"], cwd=root, env=env() | {"RUN_ID": train["run_id"]},
                            capture_output=True, text=True)
    assert parent.returncode != 0 and f"seed 1: {run_id}" in parent.stderr, parent.stderr
