"""Queued experiments run from what the workspace and DVC's cache hold: with the data server gone, a queued
experiment downloads nothing, whether or not dvc.lock is committed (DVC's run cache restores download_mnist)."""

import pytest

from helpers import git_commit_all, run, run_queue
from test_pipeline import pipeline  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e
NAME = "mnist_mlp_first"


def run_queued(root, name, steps):
    run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.max_steps={steps}", f"train@{NAME}"], root)
    ended = run_queue(root, 1)
    assert ended == {name: "Success"}, f"{ended}\n" + run(["dvc", "queue", "logs", name], root, check=False,
                                                            timeout=120).stdout


def test_a_queued_experiment_downloads_nothing_the_cache_holds(pipeline, http_server):  # noqa: F811
    root = pipeline((NAME,), max_steps=10, log_every=5, checkpoint_every=1000)
    first = run(["dvc", "repro", f"train@{NAME}"], root)  # downloads once; dvc.lock not committed
    assert "is empty" not in first.stdout + first.stderr  # check_params' .keep markers hold a line
    warned = [x for x in (first.stdout + first.stderr).splitlines() if "masks" in x]
    assert [x.split(":")[0] for x in warned] == ["check_params", f"train@{NAME}"], warned  # one line each
    served = len(http_server.requests)
    http_server.files.clear()  # the server is gone: every request would fail (404)

    run_queued(root, "no-lock", 12)
    git_commit_all(root, "dvc.lock")
    run_queued(root, "with-lock", 14)
    assert len(http_server.requests) == served, http_server.requests[served:]
