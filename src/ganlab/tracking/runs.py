"""What happens to a training run after training: later stages write their numbers and pictures onto it, a
user loads its generator back (`load_generator`), and the report logs a run of its own."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ganlab.config import TrackingCfg, Variant
from ganlab.io import BadFile, load_state_dict, read_json
from ganlab.tracking.store import (EVAL, MAX_BATCH, _client, open_client, origin_tags, run_name, store_lock, telemetry,
                                   tracking_uri)
from ganlab.tracking.tracker import MlflowTracker


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
        raise FileNotFoundError(f"{train_json} is missing: stage train@{train_json.parent.name} makes it; run "
                                f"`dvc repro train@{train_json.parent.name}` first")
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


def load_generator(run_id: str, tracking: TrackingCfg = TrackingCfg(), device: str = "cpu") -> torch.nn.Module:
    """Rebuild a logged generator from its run: the artifact `model/generator.pt` (a state dict, read with
    `weights_only=True`: tensors, never pickled code) and `model/variant.json` (the resolved config that
    `build_models` turns back into the network). The documented way to load a ganlab model from MLflow:

        from ganlab.tracking.runs import load_generator
        G = load_generator("<run id>")  # the store of params.yaml's tracking section; MLFLOW_TRACKING_URI wins
    """
    telemetry(tracking)
    from pydantic import ValidationError

    from ganlab.engine.models import build_models

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
            G.variant = cfg  # the run's resolved config: G.variant.model.nz, .latent, .n_classes say what G takes
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
