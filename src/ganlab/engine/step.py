"""One training iteration, in the order of pytorch/examples' dcgan/main.py: D on real, D on `fake.detach()`, one
D step (or the book's two), then G through D with target "real". No host synchronisation and no randomness inside
(`draw` takes the iteration's random numbers first), so a CUDA graph can capture it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import torch
from torch import Tensor

from ganlab.engine.gan import GAN
from ganlab.engine.losses import gradient_penalty


class Sums(Protocol):
    """Where an iteration adds its stats (runners.Logger)."""

    def add_d(self, stats: Tensor) -> None: ...

    def add_g(self, g_loss: Tensor) -> None: ...


@dataclass
class Draws:
    """The randomness of one iteration, in the order its steps use it: D's fake batch (z_d, y_d), the penalty's
    interpolation weights (eps), G's fresh batch (z_g, y_g). Drawn before the maths rather than inside it, so that a
    captured CUDA graph replays the same maths on new draws, and every way of running a step consumes the one
    random stream alike."""

    z_d: Tensor
    y_d: Optional[Tensor]
    eps: Optional[Tensor]
    z_g: Optional[Tensor]
    y_g: Optional[Tensor]


def draw(gan: GAN, real_shape: tuple[int, ...], g_step: bool, rng: Optional[torch.Generator] = None) -> Draws:
    n, rng = real_shape[0], rng or gan.rng
    z_d, y_d = gan.latent(n, rng)
    eps = (torch.rand((n,) + (1,) * (len(real_shape) - 1), device=z_d.device, generator=rng)
           if gan.loss.penalty else None)
    z_g, y_g = gan.latent(n, rng) if g_step and gan.cfg.train.g_noise == "fresh" else (None, None)
    return Draws(z_d, y_d, eps, z_g, y_g)


def full(t: Tensor) -> Tensor:
    """A forward pass's output in the run's full precision (torch's default dtype: float32, or float64 under
    `precision: fp64`), for the losses: bf16 autocast's scores are cast up."""
    return t.to(torch.get_default_dtype())


def _step(opt: torch.optim.Optimizer, loss: Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


D_PARTS = ("d_real", "d_fake", "d_gp", "d_x", "d_gz")  # the order of d_update's stats vector


def d_update(gan: GAN, real: Tensor, y: Optional[Tensor], r: Draws) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Update D on real (target "real") and `fake.detach()` (target "fake").
    Returns the stats vector (D_PARTS, detached; one tensor so that logging costs one op per step), and the fake
    batch with its labels for `g_noise: reuse`."""
    G, D, L = gan.G, gan.D, gan.loss
    split = gan.cfg.train.d_update == "split"
    with gan.autocast():
        s_real = full(D(real, y))
    d_real = L.d_real(s_real)
    if split:  # the book: D.train(real, 1) is its own optimiser step ...
        _step(gan.opt_d, d_real)
    with gan.autocast():
        fake = G(r.z_d, r.y_d)  # (B, ...) keeps its graph to G for `reuse`
        s_fake = full(D(fake.detach(), r.y_d))
        gp = (gan.cfg.model.gp_lambda * gradient_penalty(D, real, fake.detach(), y, r.eps)
              if L.penalty else real.new_zeros(()))
    d_fake = L.d_fake(s_fake)
    # ... and D.train(G(seed).detach(), 0) another; joint: one step on the sum (CS231n, DCGAN tutorial).
    _step(gan.opt_d, d_fake + gp if split else d_real + d_fake + gp)
    stats = torch.stack([d_real, d_fake, full(gp), L.link(s_real).mean(), L.link(s_fake).mean()]).detach()
    return stats, fake, r.y_d


def g_update(gan: GAN, fake: Tensor, y_fake: Optional[Tensor], r: Draws) -> Tensor:
    """Update G through D with target "real": on a fresh latent batch (the book, CS231n), or on the D step's fake
    batch (`reuse`, the DCGAN tutorial). Returns G's loss, detached."""
    gan.D.requires_grad_(False)  # D's gradients from this step would be discarded anyway
    with gan.autocast():
        if gan.cfg.train.g_noise == "fresh":
            fake, y_fake = gan.G(r.z_g, r.y_g), r.y_g
        g_loss = gan.loss.g(full(gan.D(fake, y_fake)))
    _step(gan.opt_g, g_loss)
    gan.D.requires_grad_(True)
    return g_loss.detach()


def iteration(gan: GAN, real: Tensor, y: Optional[Tensor], r: Draws, g_step: bool, log: Sums) -> None:
    """One step: D's update on this real batch, then G's when it is due; their stats are added to `log`'s sums on
    the device. No host synchronisation and no randomness inside, so it can be captured as a CUDA graph."""
    stats, fake, y_fake = d_update(gan, real, y, r)
    log.add_d(stats)
    if g_step:
        log.add_g(g_update(gan, fake, y_fake, r))
