"""MLflow tracking: every run lands in one store that outlives DVC's experiment copies.

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
import json
import math
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
from ganlab.io import BadFile, alive, load_state_dict, read_json
from ganlab.plots import loss_curves
from ganlab.train import LOG_COLUMNS, RunPaths, Tracker

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
FLUSH_SECONDS = 10.0


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
        telemetry(cfg)  # before open_client imports mlflow
        self.name, self.cfg, self.stage = name, cfg, stage
        self.overrides = overrides or {}
        self.uri = tracking_uri(cfg)
        self.client = open_client(self.uri)
        self.run_id: Optional[str] = None
        self.buffer: list[Any] = []
        self.logged: dict[str, int] = {}  # metric -> the last step the store holds (a resumed run)
        self.last_flush = time.monotonic()
        self.pending: list[dict[str, float]] = []  # the rows of MLflow's next point (see log_rows)
        self.window = self.log_every = 1
        self.total = 0
        self.keys = [k for k in LOG_COLUMNS if k not in ("step", "epoch")]

    def _experiment_id(self) -> str:
        """The experiment, created with its kind; an existing one without the kind (a store made by an older
        ganlab, or by `mlflow` itself) gets it, since MLflow 3's UI opens an experiment without it on its GenAI
        overview instead of the runs table."""
        exp = self.client.get_experiment_by_name(self.cfg.experiment)
        if exp is not None:
            for key, value in EXPERIMENT_KIND.items():
                if exp.tags.get(key) != value:
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):
            location = (Path(self.uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
        return self.client.create_experiment(self.cfg.experiment, artifact_location=location, tags=EXPERIMENT_KIND)

    def _tags(self, cfg: Variant) -> dict[str, str]:
        return {"variant": self.name, "source": cfg.source, "dvc_stage": self.stage, **origin_tags(),
                "device": (torch.cuda.get_device_name() if cfg.train.device != "cpu" and torch.cuda.is_available()
                           else "cpu"),
                "torch_version": torch.__version__, "pid": str(os.getpid()),
                # the global overrides that shaped this run: filter with `tags.overridden LIKE '%model.loss%'`
                # or `tags."override.model.loss" = 'bce'`
                "overridden": ",".join(sorted(self.overrides)),
                **{f"override.{k}": json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
                   for k, v in self.overrides.items()}}

    def start(self, cfg: Variant, resumed_run_id: Optional[str], total_steps: int = 0) -> Optional[str]:
        from mlflow.entities import Param, RunTag

        from ganlab.losses import get_loss

        # MLflow's series: one point per `window` steps, at most tracking.max_points per metric (see log_rows);
        # d_gp only where there is a penalty (elsewhere it is 0 at every step)
        log_every = cfg.train.log_every
        self.window = log_every * max(1, math.ceil(math.ceil(total_steps / log_every) / self.cfg.max_points))
        self.log_every, self.total = log_every, total_steps
        self.keys = [k for k in LOG_COLUMNS if k not in ("step", "epoch")
                     and (k != "d_gp" or get_loss(cfg.model.loss).penalty)]
        with store_lock(self.uri):
            if resumed_run_id and self._exists(resumed_run_id):
                self.run_id = resumed_run_id  # a resumed run continues its MLflow run
                self.logged = self._last_steps()
                self.client.update_run(self.run_id, status="RUNNING")
                self.client.set_tag(self.run_id, "pid", str(os.getpid()))
                return self.run_id
            self._close_orphans()
            run = self.client.create_run(self._experiment_id(), run_name=run_name(self.name), tags=self._tags(cfg))
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
            if tags.get("host") == socket.gethostname() and not alive(int(tags.get("pid", "0"))):
                self.client.set_terminated(run.info.run_id, status="KILLED")

    def _last_steps(self) -> dict[str, int]:
        keys = self.client.get_run(self.run_id).data.metrics
        return {k: max(m.step for m in self.client.get_metric_history(self.run_id, k)) for k in keys}

    def _new(self, metrics: list[Any]) -> list[Any]:
        """The metrics at steps the store does not hold yet (all of them, but in a resumed run)."""
        return [m for m in metrics if m.step > self.logged.get(m.key, -1)]

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:  # MlflowException: the store no longer has it (deleted, or another store)
            return False

    def log_rows(self, rows: list[dict[str, float]]) -> None:
        """The loss rows as MLflow series under `train/`. A run of up to tracking.max_points rows sends every row; a
        longer one sends one point per window of `window` steps (a multiple of log_every): the mean of its rows, at
        the step that ends it (or the run's last step). Windows follow the step numbers alone, so a resumed run
        sends the points an uninterrupted one does; losses.csv keeps every row."""
        from mlflow.entities import Metric

        ms = int(time.time() * 1000)
        for row in rows:
            step = int(row["step"])
            self.pending.append(row)
            if self.window > self.log_every and step % self.window and step < self.total:
                continue  # the window is not complete yet
            point = {k: sum(r[k] for r in self.pending) / len(self.pending) for k in self.keys if k in row}
            self.buffer += [Metric(TRAIN + k, float(v), ms, step) for k, v in point.items() if np.isfinite(v)]
            self.pending = []
        if len(self.buffer) >= MAX_BATCH or time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.buffer = self._new(self.buffer)
        if not self.buffer or self.run_id is None:
            return
        with store_lock(self.uri):
            for i in range(0, len(self.buffer), MAX_BATCH):
                self.client.log_batch(self.run_id, metrics=self.buffer[i:i + MAX_BATCH])
        self.buffer, self.last_flush = [], time.monotonic()

    def log_grid(self, epoch: int, step: int, grid: np.ndarray) -> None:
        """The epoch's fixed-noise grid as the image `train/progress` at the step it was drawn: the run page's
        image view slides over the epochs."""
        with store_lock(self.uri):
            self.client.log_image(self.run_id, _pil(grid), key=TRAIN + "progress", step=step, synchronous=True)

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
        final = self._new([Metric(TRAIN + k, float(v), ms, step) for k, v in metrics.items() if k not in LOG_COLUMNS
                           and isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)])
        with store_lock(self.uri):
            if final:
                self.client.log_batch(self.run_id, metrics=final)
            self.client.set_terminated(self.run_id, status=status)


def _pil(array: np.ndarray) -> Any:
    """A uint8 (H, W), (H, W, 1) or (H, W, 3) picture as a PIL image (grey or RGB)."""
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1
                                                else array))


def log_onto_training_run(cfg: TrackingCfg, train_json: Path, metrics: dict[str, Any],
                          images: Optional[dict[str, Path]] = None) -> str:
    """Write a later stage's numbers (under `eval/`, at the run's last step) and pictures (`sample/<name>`) onto
    the variant's training run, the one train.json's `run_id` names, so the runs table sorts by quality."""
    telemetry(cfg)
    from mlflow.entities import Metric
    from PIL import Image

    run_id, step = _training_run(cfg, train_json)
    client = _client(cfg)
    ms = int(time.time() * 1000)
    batch = [Metric(EVAL + k, float(v), ms, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    with store_lock(tracking_uri(cfg)):
        for i in range(0, len(batch), MAX_BATCH):
            client.log_batch(run_id, metrics=batch[i:i + MAX_BATCH])
        for key, path in (images or {}).items():
            with Image.open(path) as img:
                client.log_image(run_id, img.convert("RGB") if img.mode not in ("L", "RGB") else img.copy(),
                                 key=key, step=step, synchronous=True)
    return run_id


def check_training_run(cfg: TrackingCfg, train_json: Path) -> str:
    """The training run that a later stage will write onto, checked before that stage's work starts."""
    return _training_run(cfg, train_json)[0]


def _training_run(cfg: TrackingCfg, train_json: Path) -> tuple[str, int]:
    if not train_json.exists():
        raise FileNotFoundError(f"{train_json} is missing: run train@ for this variant first (dvc repro)")
    info = read_json(train_json)
    run_id, uri = info.get("run_id"), tracking_uri(cfg)
    if not run_id:
        raise FileNotFoundError(f"{train_json} names no MLflow run (run_id is empty): retrain the variant with "
                                f"stages/train.py, which records its run")
    try:
        _client(cfg).get_run(run_id)
    except Exception as err:  # MlflowException: not in this store
        raise FileNotFoundError(f"{train_json}: its training run {run_id} is not in the MLflow store {uri} "
                                f"({type(err).__name__}); point MLFLOW_TRACKING_URI or tracking.uri at the store "
                                f"that trained it, or retrain the variant (dvc repro -f train@<variant>)") from None
    return run_id, int(info.get("steps", 0))


def _client(cfg: TrackingCfg) -> Any:
    telemetry(cfg)
    return open_client(tracking_uri(cfg))


def runs_table_url(base_url: str, cfg: TrackingCfg = TrackingCfg()) -> str:
    """The UI's runs table of the experiment in its model-training mode (what `make ui` prints), or the experiment
    list when the store has no such experiment yet."""
    exp = _client(cfg).get_experiment_by_name(cfg.experiment)
    base, mode = base_url.rstrip("/"), "?workflowType=machine_learning"  # MLflow 3.17 starts in GenAI mode
    return f"{base}/#/experiments/{exp.experiment_id}/runs{mode}" if exp else f"{base}/#/experiments{mode}"


def _note(name: str, cfg: Variant) -> str:
    return (f"ganlab variant `{name}` (source: {cfg.source}); arch {cfg.model.arch}, loss {cfg.model.loss}, "
            f"batch {cfg.train.batch_size}, {cfg.train.epochs} epochs. Load the generator with "
            f"`ganlab.tracking.load_generator(run_id)`.")


def load_generator(run_id: str, tracking: TrackingCfg = TrackingCfg(), device: str = "cpu") -> torch.nn.Module:
    """Rebuild a logged generator from its run: the artifact `model/generator.pt` (a state dict, read with
    `weights_only=True`: tensors, never pickled code) and `model/variant.json` (the resolved config that
    `build_models` turns back into the network). The documented way to load a ganlab model from MLflow:

        from ganlab.tracking import load_generator
        G = load_generator("<run id>")  # the store of params.yaml's tracking section; MLFLOW_TRACKING_URI wins
    """
    telemetry(tracking)
    from pydantic import ValidationError

    from ganlab.models import build_models

    client = open_client(tracking_uri(tracking))
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(client.download_artifacts(run_id, "model", tmp))
        try:  # errors name the artifact in the run, not the temporary folder it was downloaded to
            info = read_json(local / "variant.json", "dvc repro train@<variant>")
            try:
                cfg = Variant.model_validate(info["config"])
                shape = tuple(int(n) for n in info["data_shape"])
            except (KeyError, TypeError, ValueError, ValidationError) as err:
                raise BadFile(f"{local / 'variant.json'}: not a ganlab variant ({str(err).splitlines()[0]})") from None
            G, _ = build_models(cfg.model, shape)
            load_state_dict(G, local / "generator.pt", f"dvc repro train@{info.get('variant', '<variant>')}")
        except BadFile as err:
            raise BadFile(f"MLflow run {run_id}, artifact model/{str(err).removeprefix(str(local) + '/')}") from None
    return G.to(device)


def log_summary_run(name: str, cfg: TrackingCfg, stage: str, metrics: dict[str, float], artifact_dir: Path) -> str:
    """A run that trains nothing (the report): tags, one set of metrics at step 0, a folder of artifacts, FINISHED.
    Named like the training runs: `name`, plus the DVC experiment's name when there is one."""
    telemetry(cfg)
    from mlflow.entities import Metric

    tracker = MlflowTracker(name, cfg, stage)
    tags = {"dvc_stage": stage, **origin_tags()}
    ms = int(time.time() * 1000)
    batch = [Metric(k, float(v), ms, 0) for k, v in metrics.items() if np.isfinite(v)]
    with store_lock(tracker.uri):
        run = tracker.client.create_run(tracker._experiment_id(), run_name=run_name(name), tags=tags)
        for i in range(0, len(batch), MAX_BATCH):
            tracker.client.log_batch(run.info.run_id, metrics=batch[i:i + MAX_BATCH])
        tracker.client.log_artifacts(run.info.run_id, str(artifact_dir))
        tracker.client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id
