"""GAN objectives. Each is a pair of tiny functions on raw D scores, returning its parts so they can be logged.

- `d_real(scores)`, `d_fake(scores)`: the discriminator's terms; D's loss is their sum (plus a gradient penalty
  when `penalty` is set), the way CS231n and the DCGAN tutorial add them.
- `g(scores)`: the generator's loss on D's scores of its samples.
- `link`: what turns a score into the "D(x)" that is logged (a probability for BCE and MSE, the raw score else).
- `ideal`: each D term's value at the equilibrium where D outputs 0.5 everywhere (book Appendix A), if defined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

Fn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Loss:
    d_real: Fn
    d_fake: Fn
    g: Fn
    link: Fn
    ideal: Optional[float] = None
    penalty: bool = False  # add the WGAN-GP gradient penalty to D's loss


def _bce(s: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(s, torch.full_like(s, target))


def _mse(s: Tensor, target: float) -> Tensor:  # the book: MSELoss on Sigmoid outputs
    return F.mse_loss(torch.sigmoid(s), torch.full_like(s, target))


def _identity(s: Tensor) -> Tensor:
    return s


LOSSES: dict[str, Loss] = {
    # Non-saturating GAN (Goodfellow et al. 2014): G maximises log D(G(z)).
    "bce": Loss(d_real=lambda s: _bce(s, 1.0), d_fake=lambda s: _bce(s, 0.0), g=lambda s: _bce(s, 1.0),
                link=torch.sigmoid, ideal=math.log(2)),
    # The book's MSE on the sigmoid output, targets 1 (real) and 0 (fake).
    "mse": Loss(d_real=lambda s: _mse(s, 1.0), d_fake=lambda s: _mse(s, 0.0), g=lambda s: _mse(s, 1.0),
                link=torch.sigmoid, ideal=0.25),
    # LSGAN as CS231n writes it: half squared errors on raw scores.
    "lsgan": Loss(d_real=lambda s: 0.5 * ((s - 1) ** 2).mean(), d_fake=lambda s: 0.5 * (s ** 2).mean(),
                  g=lambda s: 0.5 * ((s - 1) ** 2).mean(), link=_identity,
                  ideal=0.125),  # the optimal D at p_g = p_data scores 0.5 everywhere: 0.5 * 0.5^2 per term
    # WGAN-GP (Gulrajani et al. 2017): the critic estimates the Wasserstein-1 distance, penalised to be 1-Lipschitz.
    "wgan_gp": Loss(d_real=lambda s: -s.mean(), d_fake=lambda s: s.mean(), g=lambda s: -s.mean(),
                    link=_identity, penalty=True),
    # Hinge loss (Lim & Ye 2017; SAGAN, BigGAN).
    "hinge": Loss(d_real=lambda s: F.relu(1 - s).mean(), d_fake=lambda s: F.relu(1 + s).mean(),
                  g=lambda s: -s.mean(), link=_identity),
}


def get_loss(name: str) -> Loss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSSES)}") from None


def gradient_penalty(D: Callable[..., Tensor], real: Tensor, fake: Tensor, y: Optional[Tensor],
                     eps: Tensor) -> Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] on the interpolates x_hat = eps * real + (1 - eps) * fake, where eps
    (B, 1, ...) is uniform in [0, 1), one weight per sample (the caller draws it; see train.Draws)."""
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat, y).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
