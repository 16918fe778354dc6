"""MLflow tracking: every run lands in one store that outlives DVC's experiment copies.

The store is SQLite at `<root>/mlruns/mlflow.db` with artifacts under `<root>/mlruns/artifacts/`, where `<root>` is
`DVC_ROOT` when DVC sets it (queued experiments run in copies under .dvc/tmp/exps/) and the working directory
otherwise. `MLFLOW_TRACKING_URI`, or `tracking.uri` in params.yaml, points everything at a server instead.

SQLite takes one writer at a time. Every write of ours holds an exclusive file lock beside the database, so
concurrent runs (two queued experiments) wait for each other instead of failing with "database is locked", and
only one of them creates the schema and the experiment.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from ganlab.config import TrackingCfg, Variant, flatten
from ganlab.images import save_png
from ganlab.plots import loss_curves
from ganlab.train import LOG_COLUMNS, RunPaths, Tracker

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
FLUSH_SECONDS = 10.0


def store_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri(cfg: TrackingCfg) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri or f"sqlite:///{store_root() / 'mlruns' / 'mlflow.db'}"


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


def open_client(uri: str) -> Any:
    """An MlflowClient whose store exists. Opening a fresh SQLite store creates its schema (MLflow runs its
    migrations on first use), so that happens under `store_lock` like every other write: two runs started at once
    on a new store would otherwise both create the tables and one of them crash."""
    from mlflow.tracking import MlflowClient  # imported here: it takes seconds, and only stages need it

    with store_lock(uri):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # opens the store: creates or migrates the schema now
    return client


def _git_commit(root: Path) -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


class MlflowTracker(Tracker):
    """Logs one training run: resolved params and tags at the start, loss rows in batches, a grid per epoch, and
    at the end the final metrics, the loss curves, the generator (state dict + the config to rebuild it)."""

    def __init__(self, name: str, cfg: TrackingCfg, stage: str, overrides: Optional[dict[str, Any]] = None):
        self.name, self.cfg, self.stage = name, cfg, stage
        self.overrides = overrides or {}
        self.uri = tracking_uri(cfg)
        self.client = open_client(self.uri)
        self.run_id: Optional[str] = None
        self.buffer: list[Any] = []
        self.last_flush = time.monotonic()

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.cfg.experiment)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):
            location = (Path(self.uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
        # The kind makes MLflow 3's UI open on the runs table (its model-training view), not the GenAI overview.
        return self.client.create_experiment(self.cfg.experiment, artifact_location=location,
                                             tags={"mlflow.experimentKind": "custom_model_development"})

    def _tags(self, cfg: Variant) -> dict[str, str]:
        return {"variant": self.name, "source": cfg.source, "git_commit": _git_commit(store_root()),
                "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""), "dvc_stage": self.stage,
                "device": (torch.cuda.get_device_name() if cfg.train.device != "cpu" and torch.cuda.is_available()
                           else "cpu"),
                "torch_version": torch.__version__, "host": socket.gethostname(), "pid": str(os.getpid()),
                # the global overrides that shaped this run: filter with `tags.overridden LIKE '%model.loss%'`
                # or `tags."override.model.loss" = 'bce'`
                "overridden": ",".join(sorted(self.overrides)),
                **{f"override.{k}": json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
                   for k, v in self.overrides.items()}}

    def start(self, cfg: Variant, resumed_run_id: Optional[str]) -> Optional[str]:
        from mlflow.entities import Param, RunTag

        with store_lock(self.uri):
            if resumed_run_id and self._exists(resumed_run_id):
                self.run_id = resumed_run_id  # a resumed run continues its MLflow run
                self.client.update_run(self.run_id, status="RUNNING")
                self.client.set_tag(self.run_id, "pid", str(os.getpid()))
                return self.run_id
            self._close_orphans()
            exp_name = os.environ.get("DVC_EXP_NAME")
            run = self.client.create_run(self._experiment_id(), run_name=f"{self.name} ({exp_name})" if exp_name
                                         else self.name, tags=self._tags(cfg))
            self.run_id = run.info.run_id
            params = [Param(k, json.dumps(v) if isinstance(v, (list, tuple)) else str(v))
                      for k, v in flatten(cfg).items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[i:i + 100])
            self.client.log_batch(self.run_id, tags=[RunTag("mlflow.note.content", _note(self.name, cfg))])
        return self.run_id

    def _close_orphans(self) -> None:
        """Runs of this variant left RUNNING by a process that no longer exists (SIGKILL, a lost machine) end
        KILLED, so the store never shows a dead run as running."""
        exp = self.client.get_experiment_by_name(self.cfg.experiment)
        if exp is None:
            return
        query = f"tags.variant = '{self.name}' and attributes.status = 'RUNNING'"
        for run in self.client.search_runs([exp.experiment_id], query):
            tags = run.data.tags
            if tags.get("host") == socket.gethostname() and not _alive(int(tags.get("pid", "0"))):
                self.client.set_terminated(run.info.run_id, status="KILLED")

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:  # MlflowException: the store no longer has it (deleted, or another store)
            return False

    def log_rows(self, rows: list[dict[str, float]]) -> None:
        from mlflow.entities import Metric

        ms = int(time.time() * 1000)
        for row in rows:
            step = int(row["step"])
            self.buffer += [Metric(k, float(v), ms, step) for k, v in row.items()
                            if k not in ("step", "epoch") and np.isfinite(v)]
        if len(self.buffer) >= MAX_BATCH or time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.buffer or self.run_id is None:
            return
        with store_lock(self.uri):
            for i in range(0, len(self.buffer), MAX_BATCH):
                self.client.log_batch(self.run_id, metrics=self.buffer[i:i + MAX_BATCH])
        self.buffer, self.last_flush = [], time.monotonic()

    def log_grid(self, epoch: int, grid: np.ndarray) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"epoch_{epoch:03d}.png"
            save_png(grid if grid.ndim == 3 else np.ascontiguousarray(grid), path)
            with store_lock(self.uri):
                self.client.log_artifact(self.run_id, str(path), "grids")

    def log_files(self, files: list[Path], artifact_path: str) -> None:
        with store_lock(self.uri):
            for f in files:
                self.client.log_artifact(self.run_id, str(f), artifact_path)

    def log_outputs(self, paths: RunPaths, cfg: Variant, data_shape: tuple[int, ...]) -> None:
        """The generator as a state dict plus the resolved config that rebuilds it (`load_generator`), rather
        than `mlflow.pytorch.log_model`: a pickled module breaks when the code moves, and the state dict is the
        same file DVC tracks. Also the loss log, its curves, and the resolved params."""
        with tempfile.TemporaryDirectory() as tmp:
            info = Path(tmp) / "variant.json"
            info.write_text(json.dumps({"variant": self.name, "data_shape": list(data_shape),
                                        "config": cfg.model_dump(mode="json")}, indent=2))
            params = Path(tmp) / "params.json"
            params.write_text(json.dumps(flatten(cfg), indent=2, default=str))
            curves = loss_curves(paths.plots / "losses.csv", Path(tmp) / "losses.png", self.name)
            self.log_files([paths.models / "generator.pt", info], "model")
            self.log_files([paths.plots / "losses.csv", curves], "plots")
            self.log_files([params], "params")

    def end(self, metrics: dict[str, Any], status: str) -> None:
        from mlflow.entities import Metric

        if self.run_id is None:
            return
        self.flush()
        ms, step = int(time.time() * 1000), int(metrics.get("steps", 0))
        # the losses' final values are the last logged row already; add what only the summary has
        final = [Metric(k, float(v), ms, step) for k, v in metrics.items() if k not in LOG_COLUMNS
                 and isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)]
        with store_lock(self.uri):
            if final:
                self.client.log_batch(self.run_id, metrics=final)
            self.client.set_terminated(self.run_id, status=status)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def _note(name: str, cfg: Variant) -> str:
    return (f"ganlab variant `{name}` (source: {cfg.source}); arch {cfg.model.arch}, loss {cfg.model.loss}, "
            f"batch {cfg.train.batch_size}, {cfg.train.epochs} epochs. Load the generator with "
            f"`ganlab.tracking.load_generator(run_id)`.")


def load_generator(run_id: str, tracking: TrackingCfg = TrackingCfg(), device: str = "cpu") -> torch.nn.Module:
    """Rebuild a logged generator from its run: the artifact `model/generator.pt` (a state dict) and
    `model/variant.json` (the resolved config), so no pickled code is needed to load it back."""
    from ganlab.models import build_models

    client = open_client(tracking_uri(tracking))
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(client.download_artifacts(run_id, "model", tmp))
        info = json.loads((local / "variant.json").read_text())
        cfg = Variant.model_validate(info["config"])
        G, _ = build_models(cfg.model, tuple(info["data_shape"]))
        G.load_state_dict(torch.load(local / "generator.pt", map_location=device))
    return G.to(device)


def log_summary_run(name: str, cfg: TrackingCfg, stage: str, metrics: dict[str, float], artifact_dir: Path) -> str:
    """A run that trains nothing (the report): tags, one set of metrics at step 0, a folder of artifacts, FINISHED.
    Named like the training runs: `name`, plus the DVC experiment's name when there is one."""
    from mlflow.entities import Metric

    tracker = MlflowTracker(name, cfg, stage)
    exp_name = os.environ.get("DVC_EXP_NAME")
    tags = {"dvc_stage": stage, "dvc_exp_name": exp_name or "", "git_commit": _git_commit(store_root()),
            "host": socket.gethostname()}
    ms = int(time.time() * 1000)
    batch = [Metric(k, float(v), ms, 0) for k, v in metrics.items() if np.isfinite(v)]
    with store_lock(tracker.uri):
        run = tracker.client.create_run(tracker._experiment_id(), run_name=f"{name} ({exp_name})" if exp_name
                                        else name, tags=tags)
        for i in range(0, len(batch), MAX_BATCH):
            tracker.client.log_batch(run.info.run_id, metrics=batch[i:i + MAX_BATCH])
        tracker.client.log_artifacts(run.info.run_id, str(artifact_dir))
        tracker.client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id
