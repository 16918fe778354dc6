"""What a run records besides its weights: the plan of steps, the fixed-noise grids at each epoch's end, the
summary (train.json) and the output files. Shared by the one-seed loop (`train.fit`) and the joint one
(`joint.fit_joint`), so both write the same files the same way."""

from __future__ import annotations

import json
import math
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from ganlab.config import ConfigError, Variant
from ganlab.data.load import Dataset
from ganlab.engine.checkpoint import Progress
from ganlab.engine.contract import LOG_COLUMNS, RunPaths, Tracker
from ganlab.engine.gan import GAN, generate
from ganlab.engine.settings import peak_memory
from ganlab.images import make_grid, save_png
from ganlab.io import atomic_torch_save, atomic_write


def picture(data: Dataset, samples: Tensor) -> np.ndarray:
    """Samples as a uint8 picture: an image grid, or for vectors one row per sample (values in [0,1] stretched)."""
    if samples.dim() == 4:
        return make_grid(data.unscale(samples))
    v = samples.detach().float().cpu()
    lo, hi = v.min(), v.max()
    return ((v - lo) / (hi - lo + 1e-12) * 255).round().to(torch.uint8).numpy()


def plan(cfg: Variant, n: int) -> tuple[int, int]:
    """(steps per epoch, total steps)."""
    b = cfg.train.batch_size
    if b > n:
        raise ConfigError(f"train.batch_size {b} is larger than the {n} training samples")
    per_epoch = n // b if cfg.train.drop_last else math.ceil(n / b)
    total = per_epoch * cfg.train.epochs
    return per_epoch, min(total, cfg.train.max_steps or total)


def end_epoch(gan: GAN, data: Dataset, prog: Progress, z: Tensor, y: Optional[Tensor], tracker: Tracker) -> None:
    """Record the fixed-noise samples of the epoch just finished (or cut short by max_steps) and move on."""
    samples = generate(gan.G, z, y)
    epoch = prog.epoch + 1
    prog.grids[epoch] = picture(data, samples)
    if samples.dim() == 2:
        prog.samples[epoch] = samples.cpu().tolist()
    tracker.log_grid(epoch, prog.step, prog.grids[epoch])
    prog.epoch, prog.perm = epoch, None


def images_trained(cfg: Variant, n: int, per_epoch: int, steps: int) -> int:
    """Real images consumed by `steps` steps, exactly: an epoch is n images, or per_epoch full batches when
    drop_last drops the partial one; a short last batch (drop_last: false) counts its true size."""
    b = cfg.train.batch_size
    per_pass = per_epoch * b if cfg.train.drop_last else n
    full, rest = divmod(steps, per_epoch)
    return full * per_pass + min(rest * b, per_pass)


def summary(cfg: Variant, name: str, prog: Progress, device: torch.device, n: int,
            per_epoch: int) -> dict[str, Any]:
    """train.json. `epochs_done` is steps / steps per epoch (a run cut by max_steps ends inside an epoch), so an
    epoch whose partial batch drop_last drops still counts as one; `images_seen` counts the images really used."""
    last = prog.rows[-1]
    images = images_trained(cfg, n, per_epoch, prog.step)
    mem, mem_kind = peak_memory(device)
    return {"variant": name, "d_loss": last["d_loss"], "g_loss": last["g_loss"], "d_x": last["d_x"],
            "d_gz": last["d_gz"], "steps": prog.step, "epochs": prog.epoch,
            "steps_per_epoch": per_epoch, "epochs_done": round(prog.step / per_epoch, 4), "n_train": n,
            "batch_size": cfg.train.batch_size, "images_seen": images,
            "wall_time_s": round(prog.wall_s, 3), "images_per_s": round(images / max(prog.wall_s, 1e-9), 1),
            "peak_memory_bytes": mem, "peak_memory_kind": mem_kind, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "run_id": prog.run_id}


def write_outputs(gan: GAN, data: Dataset, prog: Progress, metrics: dict[str, Any], paths: RunPaths) -> None:
    for net, fname in ((gan.G, "generator.pt"), (gan.D, "discriminator.pt")):
        atomic_torch_save(net.state_dict(), paths.models / fname)
    atomic_write(paths.train_json, json.dumps(metrics, indent=2) + "\n")
    lines = [",".join(LOG_COLUMNS)] + [",".join(f"{r[c]:.6g}" for c in LOG_COLUMNS) for r in prog.rows]
    atomic_write(paths.losses_csv, "\n".join(lines) + "\n")
    for epoch, grid in prog.grids.items():
        save_png(grid, paths.progress / f"epoch_{epoch:03d}.png")
    for epoch, rows in prog.samples.items():
        atomic_write(paths.progress / f"epoch_{epoch:03d}.csv",
                     "\n".join(",".join(f"{v:.6g}" for v in r) for r in rows) + "\n")
