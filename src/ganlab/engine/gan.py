"""The model pair: G and D with their optimisers, the loss and the run's random stream (`GAN`), built from a
variant's config (`build_gan`), and drawing samples from G without touching its BatchNorm statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ganlab.config import Variant
from ganlab.engine.losses import Loss, get_loss
from ganlab.engine.models import build_models
from ganlab.engine.settings import run_dtype


@dataclass
class GAN:
    G: nn.Module
    D: nn.Module
    opt_g: Optional[torch.optim.Optimizer]  # None where nothing trains (sampling, evaluation)
    opt_d: Optional[torch.optim.Optimizer]
    loss: Loss
    cfg: Variant
    rng: torch.Generator

    def autocast(self) -> torch.autocast:
        """Forward passes in bf16 when `train.precision: bf16` (weights, optimiser and losses stay fp32). No cast
        cache: a captured CUDA graph must not hold on to casts made outside it (each region is one or two passes)."""
        return torch.autocast(self.rng.device.type, dtype=torch.bfloat16,
                              enabled=self.cfg.train.precision == "bf16", cache_enabled=False)

    def latent(self, n: int, rng: Optional[torch.Generator] = None) -> tuple[Tensor, Optional[Tensor]]:
        """A latent batch (n, nz) from the variant's seed distribution, and random labels when conditional."""
        m, dev, rng = self.cfg.model, self.rng.device, rng or self.rng
        shape = (n, m.nz)
        z = {"const": lambda: torch.full(shape, 0.5, device=dev),
             "rand": lambda: torch.rand(shape, device=dev, generator=rng),
             "randn": lambda: torch.randn(shape, device=dev, generator=rng),
             "uniform": lambda: torch.rand(shape, device=dev, generator=rng) * 2 - 1}[m.latent]()
        y = torch.randint(0, m.n_classes, (n,), device=dev, generator=rng) if m.n_classes else None
        return z, y


def make_optimizer(params: Any, cfg: Variant, lr: float) -> torch.optim.Optimizer:
    """SGD or Adam; `fused` picks the one-kernel implementation, else the multi-tensor (foreach) one. A captured
    Adam keeps its step count on the device (capturable)."""
    t = cfg.train
    kernels = {"fused": True} if t.fused else {"foreach": True}
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, **kernels)
    return torch.optim.Adam(params, lr=lr, betas=t.betas, capturable=t.cuda_graph, **kernels)


def build_gan(cfg: Variant, data_shape: tuple[int, ...], device: torch.device, optimizers: bool = True) -> GAN:
    """The variant's networks, initialised from its seed, with their optimisers unless `optimizers` is false
    (sampling and evaluation: a torch optimiser's first construction imports torch._dynamo, seconds a process)."""
    torch.manual_seed(cfg.train.seed)  # initialisation comes from the global RNG, on the CPU, on every device
    dtype = torch.get_default_dtype()  # float64 inside an fp64 run's `fit`; float32 for sampling and evaluation
    with run_dtype("fp32"):  # an fp64 run starts from the fp32 run's weights, cast
        G, D = build_models(cfg.model, data_shape)
    G, D = G.to(device, dtype), D.to(device, dtype)
    if cfg.train.channels_last:  # NHWC weights; batches are made NHWC in Dataset.batch
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    if cfg.train.compile:  # in place: the modules, their state_dict keys and checkpoints stay as they are
        G.compile()
        D.compile()
    rng = torch.Generator(device).manual_seed(cfg.train.seed)
    opt_g = make_optimizer(G.parameters(), cfg, cfg.train.lr_g) if optimizers else None
    opt_d = make_optimizer(D.parameters(), cfg, cfg.train.lr_d) if optimizers else None
    return GAN(G, D, opt_g, opt_d, get_loss(cfg.model.loss), cfg, rng)


def fixed_latent(gan: GAN) -> tuple[Tensor, Optional[Tensor]]:
    """The grid's latent batch: the same for every epoch (and every run with this seed), drawn from its own RNG."""
    m, n = gan.cfg.model, gan.cfg.train.grid_size
    keep = gan.rng
    gan.rng = torch.Generator(keep.device).manual_seed(gan.cfg.train.seed + 1)
    z, _ = gan.latent(n)
    gan.rng = keep
    y = torch.arange(n, device=z.device) % m.n_classes if m.n_classes else None  # conditional: digits in order
    return z, y


@torch.no_grad()
def generate(G: nn.Module, z: Tensor, y: Optional[Tensor]) -> Tensor:
    """G's samples in train mode, as the sources draw them (batch statistics in BatchNorm), without touching its
    running statistics: momentum 0 keeps them as they are."""
    bns = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        return G(z, y)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
