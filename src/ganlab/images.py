"""Image grids without torchvision: a few lines of torch and Pillow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganlab.io import atomic_path


def make_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 2, fill: float = 1.0) -> np.ndarray:
    """(B, C, H, W) floats in [0, 1] -> one (rows*(H+pad)+pad, cols*(W+pad)+pad, C) uint8 array."""
    b, c, h, w = x.shape
    ncol = nrow or math.ceil(math.sqrt(b))
    nrows = math.ceil(b / ncol)
    grid = torch.full((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad), fill)
    for i, img in enumerate(x.detach().float().cpu()):
        r, k = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top:top + h, left:left + w] = img
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def save_png(array: np.ndarray, path: Path) -> None:
    """Write an (H, W) or (H, W, C) uint8 array as PNG, atomically."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
