"""What happens to a training run after training: later stages write their numbers and pictures onto it, a
user loads its generator back (`load_generator`), and the report logs a run of its own."""

from __future__ import annotations

import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ganlab.config import VARIANT_LIMITS, LimitsCfg, TrackingCfg, Variant, limit_errors
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


RUN_ID = re.compile(r"[0-9a-f]{32}")  # what MLflow's stores create (uuid4().hex)


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
    if not (isinstance(run_id, str) and RUN_ID.fullmatch(run_id)):  # it becomes part of store paths and URLs
        raise BadFile(f"{train_json}: refused: its run_id {str(run_id)[:80]!r} is not an MLflow run id (32 hex "
                      f"digits); retrain the variant (dvc repro -f train@<variant>)")
    try:
        _client(cfg).get_run(run_id)
    except Exception as err:  # MlflowException: not in this store
        raise FileNotFoundError(f"{train_json}: its training run {run_id} is not in the MLflow store {uri} "
                                f"({type(err).__name__}); point MLFLOW_TRACKING_URI or tracking.uri at the store "
                                f"that trained it, or retrain the variant (dvc repro -f train@<variant>)") from None
    return run_id, int(info.get("steps", 0))


def load_generator(run_id: str, tracking: TrackingCfg = TrackingCfg(), device: str = "cpu",
                   limits: LimitsCfg = LimitsCfg()) -> torch.nn.Module:
    """Rebuild a logged generator from its run: the artifact `model/generator.pt` (a state dict, read with
    `weights_only=True`: tensors, never pickled code) and `model/variant.json` (the resolved config that
    `build_models` turns back into the network). The documented way to load a ganlab model from MLflow:

        from ganlab.tracking.runs import load_generator
        G = load_generator("<run id>")  # the store of params.yaml's tracking section; MLFLOW_TRACKING_URI wins

    A run can come from anyone with access to the store, so before anything is allocated the artifacts' sizes are
    checked against `limits.file_bytes` (as the store lists them, then as downloaded), the config against the
    limits of params.yaml, and the network's parameter count (counted on the meta device) against
    `limits.parameters`; only then is the network built and the weights read.
    """
    telemetry(tracking)
    from ganlab.engine.models import build_models, count_parameters

    client = open_client(tracking_uri(tracking))
    where = f"MLflow run {run_id}, artifact model/"
    sizes = _model_sizes(client, run_id, limits, where)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp)
        try:  # errors name the artifact in the run, not the temporary folder it was downloaded to
            config = Path(client.download_artifacts(run_id, "model/variant.json", tmp))
            _check_size(config, VARIANT_JSON_BYTES)
            cfg, shape, info = _variant(config, limits)
            weights = _weights_bytes(count_parameters(cfg.model, shape), limits, config.with_name("generator.pt"))
            if sizes["generator.pt"] > weights:
                raise BadFile(f"{config.with_name('generator.pt')}: refused: {sizes['generator.pt']:,} bytes, more "
                              f"than the {weights:,} the weights of the network in variant.json take")
            state = Path(client.download_artifacts(run_id, "model/generator.pt", tmp))
            _check_size(state, weights)
            G, _ = build_models(cfg.model, shape)
            G.variant = cfg  # the run's resolved config: G.variant.model.nz, .latent, .n_classes say what G takes
            load_state_dict(G, state, f"dvc repro train@{info.get('variant', '<variant>')}")
        except BadFile as err:
            raise BadFile(where + str(err).removeprefix(str(local) + "/").removeprefix("model/")) from None
    return G.to(device)


VARIANT_JSON_BYTES = 1 << 20  # a resolved config is a few KB


def _model_sizes(client: Any, run_id: str, limits: LimitsCfg, where: str) -> dict[str, int]:
    """The sizes of model/variant.json and model/generator.pt as the store lists them, checked before download."""
    sizes = {Path(f.path).name: f.file_size for f in client.list_artifacts(run_id, "model") if not f.is_dir}
    if not sizes:
        run = client.get_run(run_id)
        seeds = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
        if seeds:  # a multi-seed variant's parent run: each seed's run holds its own generator
            listing = ", ".join(f"seed {r.data.tags.get('seed', '?')}: {r.info.run_id}"
                                for r in sorted(seeds, key=lambda r: int(r.data.tags.get("seed", 0))))
            raise BadFile(f"MLflow run {run_id} is the parent of a multi-seed variant's runs and holds no model; "
                          f"load one seed's run ({listing}; metrics/<variant>/train.json lists them under per_seed)")
    for name, cap in (("variant.json", VARIANT_JSON_BYTES), ("generator.pt", limits.file_bytes)):
        if name not in sizes:
            raise BadFile(f"{where}{name}: missing; the run holds {sorted(sizes) or 'no model'} (a run of "
                          f"stages/train.py logs both)")
        if sizes[name] is None or sizes[name] > cap:
            raise BadFile(f"{where}{name}: refused: the store lists it at {sizes[name]} bytes, above the cap of "
                          f"{cap:,}" + (" (limits.file_bytes in params.yaml)" if name == "generator.pt" else ""))
    return sizes


def _check_size(path: Path, cap: int) -> None:
    if path.stat().st_size > cap:
        raise BadFile(f"{path}: refused: {path.stat().st_size:,} bytes as downloaded, above the cap of {cap:,}")


def _variant(path: Path, limits: LimitsCfg) -> tuple[Variant, tuple[int, ...], dict[str, Any]]:
    """The run's resolved config and data shape, within the limits."""
    from pydantic import ValidationError

    info = read_json(path, "dvc repro train@<variant>")
    try:
        cfg = Variant.model_validate(info["config"])
        shape = tuple(int(n) for n in info["data_shape"])
    except (KeyError, TypeError, ValueError, ValidationError) as err:
        raise BadFile(f"{path}: not a ganlab variant ({str(err).splitlines()[0]})") from None
    over = limit_errors(cfg, VARIANT_LIMITS, limits, "config")
    if not 1 <= len(shape) <= 3 or not all(1 <= n <= limits.image_size for n in shape):
        over.append(f"data_shape = {shape}: one to three sizes, each 1 to {limits.image_size:_} (limits.image_size)")
    if over:
        raise BadFile(f"{path}: refused: " + "; ".join(line.removeprefix("params.yaml: ") for line in over))
    return cfg, shape, info


def _weights_bytes(n: int, limits: LimitsCfg, path: Path) -> int:
    """The most bytes a state dict of `n` parameters takes (float64, plus the file's own overhead)."""
    if n > limits.parameters:
        raise BadFile(f"{path}: refused: the network in variant.json has {n:,} parameters, above the limit "
                      f"{limits.parameters:,} (limits.parameters in params.yaml); it was not built")
    return min(n * 8 + (1 << 20), limits.file_bytes)


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
