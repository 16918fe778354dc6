"""Ctrl-C inside `dvc exp run`, then the same command again: it resumes where it stopped, in the same MLflow run,
although DVC checks out the baseline's checkpoints/ before the stage starts."""

import json
import os
import subprocess

import pytest
import torch
from mlflow.tracking import MlflowClient

from helpers import REPO, env, git_commit_all, run
from test_pipeline import pipeline  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e
NAME = "mnist_mlp_first"
HOOKS = str(REPO / "tests" / "hooks")  # sitecustomize.py: SIGINT to the process group at a chosen call


def dvc_exp_run(root, argv, sigint_at=None):
    """`dvc exp run ARGV` in its own process group, as a terminal runs it; with `sigint_at` the stage sends the
    group SIGINT (Ctrl-C) right after that call returns."""
    e = env() | {"PYTHONPATH": os.pathsep.join([HOOKS, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    if sigint_at:
        e["GANLAB_SIGINT_AT"] = sigint_at
    return subprocess.run(["dvc", "exp", "run", *argv], cwd=root, env=e, capture_output=True, text=True,
                          start_new_session=True, timeout=600)


def test_ctrl_c_in_dvc_exp_run_then_the_same_command_resumes_the_same_mlflow_run(pipeline):  # noqa: F811
    root = pipeline((NAME,), max_steps=40, log_every=10, checkpoint_every=1000)
    run(["dvc", "repro", f"train@{NAME}"], root)  # the baseline: its finished last.pt is in DVC's cache
    git_commit_all(root, "baseline")
    argv = ["-S", "train.max_steps=60", f"train@{NAME}"]

    stopped = dvc_exp_run(root, argv, sigint_at="ganlab.tracking.tracker:MlflowTracker.log_rows:3")
    assert stopped.returncode != 0, stopped.stderr
    out = stopped.stdout + stopped.stderr
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    (line,) = [x for x in out.splitlines() if "stopped at step" in x]
    # the third row is logged at step 30; the loop sees the flag after the next step and saves a checkpoint there
    assert f"train@{NAME}: stopped at step 31 of 60" in line, line
    assert line.endswith(f"to resume, run: dvc exp run -S train.max_steps=60 train@{NAME}"), line
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("ganlab").experiment_id
    (killed,) = client.search_runs([exp_id], "attributes.status = 'KILLED'")

    resumed = dvc_exp_run(root, argv)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from step 31 of 60" in resumed.stderr, resumed.stderr
    train = json.loads((root / "metrics" / NAME / "train.json").read_text())
    assert train["steps"] == 60 and train["run_id"] == killed.info.run_id  # the same MLflow run, finished
    assert client.get_run(killed.info.run_id).info.status == "FINISHED"
    assert len(client.search_runs([exp_id])) == 2  # the baseline's and this experiment's: no third
    steps = [m.step for m in client.get_metric_history(killed.info.run_id, "train/d_loss")]
    assert sorted(steps) == [10, 20, 30, 31, 40, 50, 60]  # every step once; the stop's partial row at 31
    ckpt = torch.load(root / "checkpoints" / NAME / "last.pt", weights_only=True)["progress"]
    assert ckpt["finished"] and ckpt["step"] == 60
    assert not list((root / ".dvc" / "tmp" / "ganlab" / "resume").glob("*.pt"))  # a finished run leaves no copy
