"""The two synthetic sets, made once by stage `make_toy` and stored like the image sets (HDF5, dataset `x`)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from ganlab.config import ToyDataCfg
from ganlab.io import atomic_path

# d2l: data = X A + b with X ~ N(0, I); its mean is b and its covariance A^T A = [[1.01, 1.95], [1.95, 4.25]].
GAUSS_A = np.array([[1.0, 2.0], [-0.1, 0.5]], dtype=np.float32)
GAUSS_B = np.array([1.0, 2.0], dtype=np.float32)
PATTERN = (1.0, 0.0, 1.0, 0.0)  # the book's 1010 pattern, which its real samples are drawn around


def pattern_1010(n: int, generator: torch.Generator) -> torch.Tensor:
    """The book's real samples: [U(0.8,1), U(0,0.2), U(0.8,1), U(0,0.2)], shape (n, 4)."""
    u = torch.rand(n, 4, generator=generator)
    return torch.where(torch.tensor([True, False, True, False]), 0.8 + 0.2 * u, 0.2 * u)


def gaussian_2d(n: int, generator: torch.Generator) -> torch.Tensor:
    """d2l's real samples X A + b, shape (n, 2)."""
    x = torch.randn(n, 2, generator=generator)
    return x @ torch.from_numpy(GAUSS_A) + torch.from_numpy(GAUSS_B)


def write_h5(path: Path, x: torch.Tensor, **attrs: object) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("x", data=x.numpy().astype(np.float32))
        f.attrs.update(attrs)


def make_toy(cfg: ToyDataCfg, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(cfg.seed)
    paths = [out_dir / "pattern_1010.h5", out_dir / "gaussian_2d.h5"]
    write_h5(paths[0], pattern_1010(cfg.pattern_1010_size, g), seed=cfg.seed)
    write_h5(paths[1], gaussian_2d(cfg.gaussian_2d_size, g), seed=cfg.seed, A=GAUSS_A, b=GAUSS_B)
    return paths
