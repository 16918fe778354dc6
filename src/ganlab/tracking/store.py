"""The MLflow store: every run lands in one store that outlives DVC's experiment copies.

The store is SQLite at `<root>/mlruns/mlflow.db` with artifacts under `<root>/mlruns/artifacts/`, where `<root>` is
`DVC_ROOT` when DVC sets it (queued experiments run in copies under .dvc/tmp/exps/) and the working directory
otherwise. `MLFLOW_TRACKING_URI`, or `tracking.uri` in params.yaml, points everything at a server instead.

SQLite takes one writer at a time. Every write of ours holds an exclusive file lock beside the database, so
concurrent runs (two queued experiments) wait for each other instead of failing with "database is locked", and
only one of them creates the schema and the experiment.

What a training run holds, so that the UI's runs table compares variants by quality:
- metrics: the loss rows and the run's summary under `train/` (`train/d_loss` at every logged step), and, once
  stage `evaluate@<variant>` has run, its numbers under `eval/` on the same run (`eval/fid_mnist`); the report's
  own run keeps `<variant>.<metric>` for all of them together;
- images: the fixed-noise grid of every epoch as `train/progress` at the step it was drawn, and stage
  `sample@<variant>`'s pictures as `sample/<name>` at the run's last step (the run page's image view);
- the generator as a state dict plus the config that rebuilds it (`load_generator(run_id)`): no pickled code;
- tags: variant, source, git commit (also `mlflow.source.git.commit`), host, device, torch version, and under
  `dvc exp run` the experiment's name `dvc_exp_name`, which also ends the run's name: filter on
  `tags.dvc_exp_name = 'my-exp'` or group the runs table by it to see one `dvc exp run` as one unit.

A resumed run continues its MLflow run. Before logging, it reads the last step the store holds for each metric
and skips what is already there: a run killed after sending steps its checkpoint did not reach sends them again
when it redoes them, and one killed before sending its buffered rows sends them from the checkpoint, so each
metric ends with exactly one value per logged step.

MLflow's telemetry (usage reports to mlflow.org, looked up at `import mlflow`) is off unless `tracking.telemetry`
is true: we set MLflow's documented switch `MLFLOW_DISABLE_TELEMETRY=true` before importing it, unless the
environment sets `MLFLOW_DISABLE_TELEMETRY` itself (which then wins, like `MLFLOW_TRACKING_URI`).
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ganlab.config import TrackingCfg

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def store_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri(cfg: TrackingCfg) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri or f"sqlite:///{store_root() / 'mlruns' / 'mlflow.db'}"


def telemetry(cfg: TrackingCfg) -> None:
    """MLflow's telemetry switch, before mlflow is imported (it reads it once, at import)."""
    if not cfg.telemetry:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Exclusive across processes for a local SQLite store; a no-op for a tracking server."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///")).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


TRAIN, EVAL = "train/", "eval/"  # metric prefixes on a training run


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def run_name(name: str) -> str:
    """`mnist_lsgan`, or `mnist_lsgan · my-exp` under `dvc exp run`."""
    exp_name = os.environ.get("DVC_EXP_NAME")
    return f"{name} · {exp_name}" if exp_name else name


def origin_tags() -> dict[str, str]:
    """Where a run comes from: the commit, the machine, and the DVC experiment when there is one."""
    commit = _git_commit(store_root())
    tags = {"git_commit": commit, "mlflow.source.git.commit": commit, "host": socket.gethostname()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


_OPEN: dict[str, Any] = {}  # uri -> its client: a stage opens its store once (an open takes about a second)


def open_client(uri: str) -> Any:
    """An MlflowClient whose store exists. Opening a fresh SQLite store creates its schema (MLflow runs its
    migrations on first use), so that happens under `store_lock` like every other write: two runs started at once
    on a new store would otherwise both create the tables and one of them crash. The client is kept for the
    process, unless its SQLite file has gone since (a store removed and made anew is opened anew)."""
    client = _OPEN.get(uri)
    if client is not None and (not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()):
        return client
    from mlflow.tracking import MlflowClient  # imported here: it takes seconds, and only stages need it

    with store_lock(uri):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # opens the store: creates or migrates the schema now
    _OPEN[uri] = client
    return client


def _git_commit(root: Path) -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def _client(cfg: TrackingCfg) -> Any:
    telemetry(cfg)
    return open_client(tracking_uri(cfg))


def runs_table_url(base_url: str, cfg: TrackingCfg = TrackingCfg()) -> str:
    """The UI's runs table of the experiment in its model-training mode (what `make ui` prints), or the experiment
    list when the store has no such experiment yet."""
    exp = _client(cfg).get_experiment_by_name(cfg.experiment)
    base, mode = base_url.rstrip("/"), "?workflowType=machine_learning"  # MLflow 3.17 starts in GenAI mode
    return f"{base}/#/experiments/{exp.experiment_id}/runs{mode}" if exp else f"{base}/#/experiments{mode}"
