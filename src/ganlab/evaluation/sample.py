"""Stage sample@<variant>: the pictures of a trained generator -> samples/<variant>/sample/.

Every variant: `grid.png` (samples from the `sample.seed` noise) and `progression.png` (training, epoch by epoch,
assembled from train@'s samples/<variant>/progress/). For `pattern_1010` the progression is the book's
pattern-evolution heat map, for `gaussian_2d` generated against real points. Image variants add the book's seed
experiments (notebook 09): `interpolation.png`, seed1 → seed2 in 12 steps as a 3×4 grid, and `seeds.png`:
seed1, seed2, seed1+seed2, seed1−seed2, seed1*seed2. Conditional variants draw one row per digit.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from ganlab.config import Params, SampleCfg
from ganlab.data.load import TOY, Dataset, load_dataset
from ganlab.engine.contract import RunPaths
from ganlab.engine.gan import GAN, generate
from ganlab.engine.settings import resolve_device
from ganlab.evaluation.sampling import data_shape, load_trained, reseed, scale_only
from ganlab.figures import heatmap, montage, scatter_panels
from ganlab.images import make_grid, save_png
from ganlab.io import bad_file

INTERP_STEPS = 12  # the book's 3×4 grid: seed1 + (seed2 − seed1)/11·k, k = 0..11
MAX_PANELS = 20  # epochs shown in a progression figure (evenly spaced when there are more)


def interpolation_latents(seed1: Tensor, seed2: Tensor, steps: int = INTERP_STEPS) -> Tensor:
    """(steps, nz): seed1 + (seed2 − seed1)·k/(steps−1). torch.lerp computes the upper half from seed2's side, so
    the endpoints are seed1 and seed2 exactly (the book's formula can miss seed2 by a rounding error)."""
    w = torch.arange(steps, dtype=seed1.dtype, device=seed1.device) / (steps - 1)
    return torch.lerp(seed1.expand(steps, -1), seed2.expand(steps, -1), w[:, None])


def seed_arithmetic(seed1: Tensor, seed2: Tensor) -> Tensor:
    """The book's seed experiments (notebook 09): (5, nz)."""
    return torch.stack([seed1, seed2, seed1 + seed2, seed1 - seed2, seed1 * seed2])


def has_batchnorm(G: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in G.modules())


def draw(gan: GAN, z: Tensor, y: Optional[Tensor], context: Optional[Tensor]) -> Tensor:
    """G(z, y) in train mode, as the sources sample. A BatchNorm generator normalises with its batch statistics,
    so a batch of 12 interpolants would be normalised by itself: for those the `context` (a batch of ordinary
    latents, with labels when conditional) is drawn alongside and dropped."""
    if context is None or not has_batchnorm(gan.G):
        return generate(gan.G, z, y)
    k = gan.cfg.model.n_classes
    yc = torch.arange(len(context), device=z.device) % k if k else None
    out = generate(gan.G, torch.cat([z, context]), None if y is None else torch.cat([y, yc]))
    return out[:len(z)]


def rows_per_digit(gan: GAN, z: Tensor, n_classes: int) -> tuple[Tensor, Optional[Tensor]]:
    """Conditional variants: the same latents once per digit, digit by digit (one grid row each)."""
    if not n_classes:
        return z, None
    y = torch.arange(n_classes, device=z.device).repeat_interleave(len(z))
    return z.repeat(n_classes, 1), y


def image_pictures(gan: GAN, data: Dataset, scfg: SampleCfg, out_dir: Path) -> list[Path]:
    k = gan.cfg.model.n_classes
    reseed(gan, scfg.seed)
    z_grid, _ = gan.latent(scfg.per_digit if k else scfg.grid_size)
    seed1, seed2 = gan.latent(2)[0]
    context, _ = gan.latent(scfg.grid_size)
    pictures = {"grid.png": (z_grid, scfg.per_digit if k else math.ceil(math.sqrt(len(z_grid)))),
                "interpolation.png": (interpolation_latents(seed1, seed2), INTERP_STEPS if k else 4),
                "seeds.png": (seed_arithmetic(seed1, seed2), 5)}
    paths = []
    for fname, (z, ncol) in tqdm(pictures.items(), desc="pictures", unit="picture", file=sys.stderr,
                                 dynamic_ncols=True):
        z, y = rows_per_digit(gan, z, k)
        x = draw(gan, z, y, context)
        save_png(make_grid(data.unscale(x), nrow=ncol), out_dir / fname)
        paths.append(out_dir / fname)
    return paths


def read_samples(path: Path) -> np.ndarray:
    """The fixed-noise samples train@ wrote for one epoch (vector data), (N, D) floats."""
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError as err:
        raise bad_file(path, f"not a CSV of numbers, truncated or garbage ({str(err).splitlines()[0]})") from None


def epoch_files(progress_dir: Path, suffix: str) -> list[tuple[int, Path]]:
    """(epoch, file) of train@'s per-epoch outputs, in order, at most MAX_PANELS evenly spaced (last kept)."""
    found = sorted((int(m.group(1)), p) for p in progress_dir.glob(f"epoch_*{suffix}")
                   if (m := re.fullmatch(rf"epoch_(\d+){re.escape(suffix)}", p.name)))
    if len(found) > MAX_PANELS:
        keep = np.unique(np.linspace(0, len(found) - 1, MAX_PANELS).round().astype(int))
        found = [found[i] for i in keep]
    return found


def progression(progress_dir: Path, out: Path) -> Optional[Path]:
    files = epoch_files(progress_dir, ".png")
    if not files:
        return None
    return montage([np.asarray(Image.open(p)) for _, p in files], [f"epoch {e}" for e, _ in files], out)


def vector_pictures(gan: GAN, data: Dataset, scfg: SampleCfg, progress_dir: Path, out_dir: Path) -> list[Path]:
    reseed(gan, scfg.seed)
    z, y = gan.latent(scfg.grid_size)
    fake = generate(gan.G, z, y).cpu().numpy()
    files = epoch_files(progress_dir, ".csv")
    snaps = [read_samples(p) for _, p in files]
    labels = [f"epoch {e}" for e, _ in files]
    if gan.cfg.data.dataset == "pattern_1010":  # one fixed-noise sample per epoch: a row of the evolution
        paths = [heatmap(fake[:16], [str(i) for i in range(len(fake[:16]))], out_dir / "grid.png",
                         "generated patterns (target 1, 0, 1, 0)")]
        if snaps:
            paths.append(heatmap(np.stack([s.mean(0) for s in snaps]), labels, out_dir / "progression.png",
                                 "G's output, epoch by epoch (book §2.2)"))
        return paths
    real = data.x.cpu().numpy()
    paths = [scatter_panels(real, [fake], ["generated vs real"], out_dir / "grid.png")]
    if snaps:
        paths.append(scatter_panels(real, snaps, labels, out_dir / "progression.png"))
    return paths


def write_samples(params: Params, name: str, root: Path, data_dir: Path, seed: Optional[int] = None) -> list[Path]:
    """All pictures of one trained variant (train@<name>'s outputs under `root`; `seed`: that seed's run of a
    multi-seed variant); returns the files written."""
    cfg, scfg = params.variant(name), params.sample
    device = resolve_device(cfg.train.device)
    run = RunPaths.for_variant(name, root, data_dir, seed)
    gan = load_trained(cfg, run.models, data_shape(cfg.data, data_dir), device)
    out_dir, progress_dir = run.pictures, run.progress
    with torch.no_grad():
        if cfg.data.dataset in TOY:
            return vector_pictures(gan, load_dataset(cfg.data, data_dir, torch.device("cpu")), scfg, progress_dir,
                                   out_dir)
        paths = image_pictures(gan, scale_only(cfg.data), scfg, out_dir)
    made = progression(progress_dir, out_dir / "progression.png")
    return paths + ([made] if made else [])
