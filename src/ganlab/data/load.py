"""Loading for training: a whole set, once, into one tensor on the training device.

Images stay uint8 (N, C, H, W) on the device, 4x smaller than float; each batch is scaled when it is taken.
No per-item file access and no DataLoader workers: a batch is an index into the tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ganlab.config import VariantData
from ganlab.io import h5_error, rebuild_command

TOY = ("pattern_1010", "gaussian_2d")


@dataclass
class Dataset:
    x: Tensor  # (N, C, H, W) uint8 images, or (N, D) float vectors
    y: Optional[Tensor]  # (N,) int64 labels, when the set has them
    cfg: VariantData

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def scale(self, x: Tensor) -> Tensor:
        """uint8 pixels -> floats (torch's default dtype: float32, or float64 in a `precision: fp64` run) in the
        variant's range; toy vectors are already in their own units."""
        is_pixels = x.dtype == torch.uint8
        x = x.to(torch.get_default_dtype())
        if not is_pixels:
            return x
        if self.cfg.scale == "unit":
            return x / 255.0
        if self.cfg.scale == "symmetric":
            return x / 127.5 - 1.0
        return (x / 255.0 - self.cfg.mean) / self.cfg.std

    def unscale(self, x: Tensor) -> Tensor:
        """The inverse of `scale`, to [0, 1], for pictures."""
        if self.cfg.scale == "symmetric":
            x = (x + 1.0) / 2.0
        elif self.cfg.scale == "standardize":
            x = x * self.cfg.std + self.cfg.mean
        return x.clamp(0.0, 1.0)

    def batch(self, idx: Tensor, channels_last: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        x = self.scale(self.x.index_select(0, idx))  # x[idx], without advanced indexing's set-up
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, None if self.y is None else self.y.index_select(0, idx)


def _read(cfg: VariantData, path: Path) -> tuple[np.ndarray, Optional[np.ndarray]]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `{rebuild_command(path)}` (or `dvc repro` for every "
                                f"data stage) first")
    try:
        return _read_h5(cfg, path)
    except (OSError, KeyError, ValueError) as err:  # truncated, garbage, or without the datasets
        raise h5_error(path, err, "the datasets the data stage writes") from None


def _read_h5(cfg: VariantData, path: Path) -> tuple[np.ndarray, Optional[np.ndarray]]:
    with h5py.File(path, "r") as f:
        if cfg.dataset in TOY:
            return f["x"][:], None
        if cfg.dataset == "mnist":
            splits = ["train", "test"] if cfg.split == "all" else [cfg.split]
            x = np.concatenate([f[s]["images"][:] for s in splits])[:, None]  # (N, 1, 28, 28)
            y = np.concatenate([f[s]["labels"][:] for s in splits]).astype(np.int64)
            return x, y
        return f["images"][:].transpose(0, 3, 1, 2), None  # CelebA (N, H, W, 3) -> (N, 3, H, W)


def resize(x: Tensor, size: int, chunk: int = 2048) -> Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size). Integer shrink factors average whole blocks (area);
    anything else is bilinear, as torchvision's Resize does on PIL images. Chunked to bound float memory."""
    h = x.shape[-1]
    mode = "area" if h % size == 0 and h >= size else "bilinear"
    out = [F.interpolate(c.float(), size=(size, size), mode=mode, **({} if mode == "area" else
                         {"align_corners": False, "antialias": True})).round_().clamp_(0, 255).to(torch.uint8)
           for c in x.split(chunk)]
    return torch.cat(out)


def load_dataset(cfg: VariantData, data_dir: Path, device: torch.device) -> Dataset:
    x_np, y_np = _read(cfg, Path(data_dir) / f"{cfg.dataset}.h5")
    if cfg.limit is not None:
        x_np, y_np = x_np[: cfg.limit], None if y_np is None else y_np[: cfg.limit]
    x = torch.from_numpy(np.ascontiguousarray(x_np))
    if cfg.image_size is not None and x.shape[-1] != cfg.image_size:
        x = resize(x, cfg.image_size)
    y = None if y_np is None else torch.from_numpy(y_np).to(device)
    return Dataset(x=x.to(device), y=y, cfg=cfg)
