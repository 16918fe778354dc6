"""`MlflowTracker`: the engine's Tracker port on MLflow. One training run holds the resolved params and tags,
the loss rows under `train/` (at most tracking.max_points points per metric), a grid per epoch, and at the end the
final metrics, the loss curves and the generator (state dict + the config that rebuilds it). The store, and what a
run holds, are described in ganlab.tracking.store."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ganlab.config import TrackingCfg, Variant, flatten
from ganlab.engine.contract import LOG_COLUMNS, RunPaths, Tracker
from ganlab.io import alive
from ganlab.tracking.curves import loss_curves
from ganlab.tracking.store import (EXPERIMENT_KIND, MAX_BATCH, TRAIN, open_client, origin_tags, run_name, store_lock,
                                   telemetry, tracking_uri)

FLUSH_SECONDS = 10.0


class MlflowTracker(Tracker):
    """Logs one training run: resolved params and tags at the start, loss rows in batches, a grid per epoch, and
    at the end the final metrics, the loss curves, the generator (state dict + the config to rebuild it)."""

    def __init__(self, name: str, cfg: TrackingCfg, stage: str, overrides: Optional[dict[str, Any]] = None,
                 parent: Optional[str] = None):
        telemetry(cfg)  # before open_client imports mlflow
        self.name, self.cfg, self.stage = name, cfg, stage
        self.parent = parent  # one seed of a multi-seed run: the group's run (`open_seed_group`), its parent
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
                "seed": str(cfg.train.seed),  # `ganlab compare` finds a seed's run by dvc_exp_name + seed
                **({"mlflow.parentRunId": self.parent} if self.parent else {}),
                # the global overrides that shaped this run: filter with `tags.overridden LIKE '%model.loss%'`
                # or `tags."override.model.loss" = 'bce'`
                "overridden": ",".join(sorted(self.overrides)),
                **{f"override.{k}": json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
                   for k, v in self.overrides.items()}}

    def start(self, cfg: Variant, resumed_run_id: Optional[str], total_steps: int = 0) -> Optional[str]:
        from mlflow.entities import Param, RunTag

        from ganlab.engine.losses import get_loss

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
                if self.parent:  # a restarted stage opened a new group run: the resumed seed joins it
                    self.client.set_tag(self.run_id, "mlflow.parentRunId", self.parent)
                return self.run_id
            self._close_orphans()
            name = f"{self.name} seed {cfg.train.seed}" if self.parent else self.name
            run = self.client.create_run(self._experiment_id(), run_name=run_name(name), tags=self._tags(cfg))
            self.run_id = run.info.run_id
            params = [Param(k, json.dumps(v) if isinstance(v, (list, tuple)) else str(v))
                      for k, v in flatten(cfg).items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[i:i + 100])
            self.client.log_batch(self.run_id, tags=[RunTag("mlflow.note.content", _note(self.name, cfg))])
        return self.run_id

    def open_seed_group(self, cfg: Variant, seeds: list[int]) -> str:
        """The parent run of a multi-seed run: the runs table shows its seeds' runs nested under it. It holds the
        variant's params and tags (without `seed`); `end_seed_group` closes it."""
        with store_lock(self.uri):
            self._close_orphans()
            tags = {**self._tags(cfg), "seeds": ",".join(map(str, seeds)), "seed": "group"}
            run = self.client.create_run(self._experiment_id(), run_name=run_name(f"{self.name} seeds"), tags=tags)
            self.client.log_param(run.info.run_id, "train.seeds", len(seeds))
        return run.info.run_id

    def end_seed_group(self, run_id: str, n_ok: int, n_failed: int, status: str) -> None:
        from mlflow.entities import Metric

        ms = int(time.time() * 1000)
        with store_lock(self.uri):
            self.client.log_batch(run_id, metrics=[Metric("seeds_ok", n_ok, ms, 0),
                                                   Metric("seeds_failed", n_failed, ms, 0)])
            self.client.set_terminated(run_id, status=status)

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
            curves = loss_curves(paths.losses_csv, Path(tmp) / "losses.png", self.name)
            self.log_files([paths.models / "generator.pt", info], "model")
            self.log_files([paths.losses_csv, curves], "plots")
            self.log_files([params], "params")
            self.log_generator_model([paths.models / "generator.pt", info], cfg)

    def log_generator_model(self, files: list[Path], cfg: Variant) -> None:
        """The generator as the run's MLflow 3 logged model (the UI's "Logged models", linked to this run): the
        same two files as `model/`, a state dict and its config, no pickled code. Once per run: a run resumed after
        a kill while logging finds the model it made."""
        from mlflow.entities import LoggedModelOutput

        with store_lock(self.uri):
            exp_id = self.client.get_run(self.run_id).info.experiment_id
            made = [m for m in self.client.search_logged_models([exp_id], filter_string=f"name = '{self.name}'")
                    if m.source_run_id == self.run_id and str(m.status) == "READY"]
            if made:
                return
            model = self.client.create_logged_model(
                exp_id, name=self.name, source_run_id=self.run_id, model_type="ganlab generator",
                params={"arch": cfg.model.arch, "nz": str(cfg.model.nz), "latent": cfg.model.latent,
                        "loss": cfg.model.loss},
                tags={"variant": self.name, "load_with": "ganlab.tracking.load_generator(<run id>)"})
            with tempfile.TemporaryDirectory() as tmp:
                for f in files:
                    shutil.copyfile(f, Path(tmp) / f.name)
                self.client.log_model_artifacts(model.model_id, tmp)
            self.client.finalize_logged_model(model.model_id, "READY")
            self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step=0)])

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


def _note(name: str, cfg: Variant) -> str:
    return (f"ganlab variant `{name}` (source: {cfg.source}); arch {cfg.model.arch}, loss {cfg.model.loss}, "
            f"batch {cfg.train.batch_size}, {cfg.train.epochs} epochs. Load the generator with "
            f"`ganlab.tracking.load_generator(run_id)`.")
