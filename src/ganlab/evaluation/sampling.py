"""Drawing from a trained generator: rebuild it from models/<variant>/generator.pt and sample in batches.

Samples come from the engine's own pieces: `build_gan` for the networks and the variant's latent distribution
(`GAN.latent`), `generate` for train-mode sampling as the sources do, `Dataset.unscale` back to [0, 1].
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator, Optional

import h5py
import torch
from torch import Tensor
from tqdm import tqdm

from ganlab.config import Variant, VariantData
from ganlab.data.load import TOY, Dataset
from ganlab.engine.gan import GAN, build_gan, generate
from ganlab.io import h5_error, load_state_dict, rebuild_command

MNIST_SIZE = 28


def data_shape(cfg: VariantData, data_dir: Path) -> tuple[int, ...]:
    """The shape of one training sample, read from the HDF5 metadata (without loading the set)."""
    path = Path(data_dir) / f"{cfg.dataset}.h5"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `{rebuild_command(path)}` first")
    try:
        with h5py.File(path, "r") as f:
            if cfg.dataset in TOY:
                return (f["x"].shape[1],)
            if cfg.dataset == "mnist":
                c, (h, w) = 1, f["train/images"].shape[1:]
            else:
                h, w, c = f["images"].shape[1:]  # CelebA (N, H, W, 3)
    except (OSError, KeyError, ValueError) as err:
        raise h5_error(path, err, "the datasets the data stage writes") from None
    return (c, cfg.image_size, cfg.image_size) if cfg.image_size else (c, h, w)


def load_trained(cfg: Variant, models_dir: Path, shape: tuple[int, ...], device: torch.device) -> GAN:
    """The variant's networks with the trained generator's weights."""
    path = Path(models_dir) / "generator.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; train the variant first (`dvc repro train@<variant>`)")
    gan = build_gan(cfg, shape, device, optimizers=False)
    load_state_dict(gan.G, path)  # tensors only: a generator.pt holding pickled code is refused unrun
    return gan


def reseed(gan: GAN, seed: int) -> None:
    """Sampling gets its own RNG, so the samples depend on the seed only, not on what ran before."""
    gan.rng = torch.Generator(gan.rng.device).manual_seed(seed)


def balanced_labels(n: int, n_classes: int, device: torch.device) -> Optional[Tensor]:
    """0, 1, ..., K-1, 0, 1, ...: every digit asked for equally often (conditional variants), else None."""
    return torch.arange(n, device=device) % n_classes if n_classes else None


def sample_batches(gan: GAN, n: int, batch_size: int, seed: int,
                   desc: str = "generate") -> Iterator[tuple[Tensor, Optional[Tensor]]]:
    """n samples in the variant's own scale, in batches, with the labels asked for (balanced) when conditional.
    A progress bar on stderr counts them."""
    reseed(gan, seed)
    labels = balanced_labels(n, gan.cfg.model.n_classes, gan.rng.device)
    with tqdm(total=n, desc=desc, unit="sample", file=sys.stderr, mininterval=2.0, dynamic_ncols=True) as bar:
        for i in range(0, n, batch_size):
            z, _ = gan.latent(min(batch_size, n - i))
            y = None if labels is None else labels[i:i + len(z)]
            yield generate(gan.G, z, y), y
            bar.update(len(z))


def to_uint8(data: Dataset, x: Tensor) -> Tensor:
    """Samples in the variant's scale -> uint8 pixels, as they would be saved: comparable with the real uint8 set."""
    return (data.unscale(x.float()) * 255).round().to(torch.uint8)


def scale_only(cfg: VariantData) -> Dataset:
    """A Dataset with no samples, for its `scale`/`unscale` (they depend only on the config)."""
    return Dataset(x=torch.empty(0), y=None, cfg=cfg)
