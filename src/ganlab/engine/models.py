"""Generators and discriminators, built from a variant's model config.

The layer lists are the sources' own (docs/variants.md). Two conventions hold for every family:
- G takes a latent batch (B, nz) and, when conditional, integer labels (B,); it returns data-shaped samples
  (B, C, H, W) for images or (B, D) for vectors.
- D takes data-shaped samples (and labels) and returns raw scores (B,). The sources' final Sigmoid is left out;
  the loss applies its link (BCE-with-logits is Sigmoid + BCELoss, computed more stably).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.config import ConfigError, ConvModel, MlpModel


def _act(name: str, slope: float = 0.2) -> nn.Module:
    return {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU,
            "lrelu": lambda: nn.LeakyReLU(slope)}[name]()


def _norm(name: str, width: int) -> list[nn.Module]:
    return {"none": [], "layernorm": [nn.LayerNorm(width)], "batchnorm": [nn.BatchNorm1d(width)]}[name]


def mlp(widths: list[int], act: str, slope: float, norm: str) -> list[nn.Module]:
    """Linear, act, norm for each hidden layer, then a last Linear (the sources all put the norm after the act)."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Linear(a, b), _act(act, slope), *_norm(norm, b)]
    return layers + [nn.Linear(widths[-2], widths[-1])]


class Conditioned(nn.Module):
    """Wraps a network whose first layer takes a flat vector; appends one-hot labels to that vector."""

    def __init__(self, net: nn.Module, n_classes: int):
        super().__init__()
        self.net, self.n_classes = net, n_classes

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = x.flatten(1)
        if self.n_classes:
            x = torch.cat([x, F.one_hot(y, self.n_classes).to(x.dtype)], dim=1)  # (B, D + n_classes)
        return self.net(x)


class MlpG(Conditioned):
    def __init__(self, cfg: MlpModel, data_shape: tuple[int, ...]):
        out = [] if cfg.g_out == "none" else [_act(cfg.g_out)]
        net = nn.Sequential(*mlp([cfg.nz + cfg.n_classes, *cfg.g_hidden, math.prod(data_shape)],
                                 cfg.g_act, cfg.g_slope, cfg.g_norm), *out, nn.Unflatten(1, data_shape))
        super().__init__(net, cfg.n_classes)


class MlpD(Conditioned):
    def __init__(self, cfg: MlpModel, data_shape: tuple[int, ...]):
        net = nn.Sequential(*mlp([math.prod(data_shape) + cfg.n_classes, *cfg.d_hidden, 1],
                                 cfg.d_act, cfg.d_slope, cfg.d_norm), nn.Flatten(0))
        super().__init__(net, cfg.n_classes)


class Unconditional(nn.Module):
    """A plain Sequential with the (x, y) call signature shared by all models; y must be None."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


# --- CS231n 2020 A3 DCGAN (MNIST 28x28, [-1,1]) ---------------------------------------------------------------
def cs231n_dcgan(cfg: ConvModel, c: int) -> tuple[nn.Module, nn.Module]:
    G = Unconditional(
        nn.Linear(cfg.nz, 1024), nn.ReLU(), nn.BatchNorm1d(1024),
        nn.Linear(1024, 7 * 7 * 128), nn.ReLU(), nn.BatchNorm1d(7 * 7 * 128),
        nn.Unflatten(1, (128, 7, 7)),
        nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.ReLU(), nn.BatchNorm2d(64),  # (B, 64, 14, 14)
        nn.ConvTranspose2d(64, c, 4, 2, 1), nn.Tanh())  # (B, 1, 28, 28)
    D = Unconditional(
        nn.Conv2d(c, 32, 5, 1), nn.LeakyReLU(0.01), nn.MaxPool2d(2),  # (B, 32, 12, 12)
        nn.Conv2d(32, 64, 5, 1), nn.LeakyReLU(0.01), nn.MaxPool2d(2),  # (B, 64, 4, 4)
        nn.Flatten(), nn.Linear(1024, 1024), nn.LeakyReLU(0.01), nn.Linear(1024, 1), nn.Flatten(0))
    return G, D


# --- DCGAN paper / PyTorch tutorial, 64x64 --------------------------------------------------------------------
def dcgan64(cfg: ConvModel, c: int) -> tuple[nn.Module, nn.Module]:
    g, d = cfg.ngf, cfg.ndf

    def up(a: int, b: int) -> list[nn.Module]:
        return [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]

    def down(a: int, b: int) -> list[nn.Module]:
        if cfg.d_norm == "none":  # WGAN-GP critic: no BatchNorm, so the conv keeps its bias (ours, not the paper's)
            return [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        return [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]

    G = Unconditional(
        nn.Unflatten(1, (cfg.nz, 1, 1)),
        nn.ConvTranspose2d(cfg.nz, g * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(g * 8), nn.ReLU(True),  # 4x4
        *up(g * 8, g * 4), *up(g * 4, g * 2), *up(g * 2, g),  # 8, 16, 32
        nn.ConvTranspose2d(g, c, 4, 2, 1, bias=False), nn.Tanh())  # (B, c, 64, 64)
    D = Unconditional(
        nn.Conv2d(c, d, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),  # 32
        *down(d, d * 2), *down(d * 2, d * 4), *down(d * 4, d * 8),  # 16, 8, 4
        nn.Conv2d(d * 8, 1, 4, 1, 0, bias=False), nn.Flatten(0))  # (B,)
    return G, D


# --- blog "GAN on MNIST", convolutional (variants.md D, with its choices) -------------------------------------
def blog_conv(cfg: ConvModel, c: int) -> tuple[nn.Module, nn.Module]:
    G = Unconditional(
        nn.Linear(cfg.nz, 3136), nn.Unflatten(1, (1, 56, 56)), nn.BatchNorm2d(1), nn.ReLU(),
        nn.Conv2d(1, 50, 3, 1, 1), nn.BatchNorm2d(50), nn.ReLU(),
        nn.Conv2d(50, 25, 3, 1, 1), nn.BatchNorm2d(25), nn.ReLU(),
        nn.Conv2d(25, c, 2, 2), nn.Tanh())  # (B, 1, 28, 28)
    D = Unconditional(
        nn.Conv2d(c, 32, 5, 1, 2), nn.LeakyReLU(0.2), nn.AvgPool2d(2),  # 14x14
        nn.Conv2d(32, 64, 5, 1, 2), nn.LeakyReLU(0.2), nn.AvgPool2d(2),  # 7x7
        nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.LeakyReLU(0.2), nn.Linear(1024, 1), nn.Flatten(0))
    return G, D


# --- the book's convolutional CelebA GAN (notebooks 14/15), 128x128 -------------------------------------------
def book_cnn(cfg: ConvModel, c: int) -> tuple[nn.Module, nn.Module]:
    def act() -> nn.Module:
        return nn.GELU() if cfg.act == "gelu" else nn.LeakyReLU(0.2)

    G = Unconditional(
        nn.Linear(cfg.nz, 3 * 11 * 11), act(), nn.Unflatten(1, (3, 11, 11)),
        nn.ConvTranspose2d(3, 256, 8, 2), nn.BatchNorm2d(256), act(),  # 28x28
        nn.ConvTranspose2d(256, 256, 8, 2), nn.BatchNorm2d(256), act(),  # 62x62
        nn.ConvTranspose2d(256, c, 8, 2, padding=1), nn.BatchNorm2d(c), nn.Sigmoid())  # (B, 3, 128, 128)
    D = Unconditional(
        nn.Conv2d(c, 256, 8, 2), nn.BatchNorm2d(256), act(),  # 61x61
        nn.Conv2d(256, 256, 8, 2), nn.BatchNorm2d(256), act(),  # 27x27
        nn.Conv2d(256, 3, 8, 2), act(),  # 10x10
        nn.Flatten(), nn.Linear(3 * 10 * 10, 1), nn.Flatten(0))
    return G, D


CONV_FAMILIES = {"cs231n_dcgan": cs231n_dcgan, "dcgan64": dcgan64, "blog_conv": blog_conv, "book_cnn": book_cnn}
# The image size each convolutional family is built for; the data must match (checked before training).
CONV_SIZES = {"cs231n_dcgan": 28, "dcgan64": 64, "blog_conv": 28, "book_cnn": 128}


def init_weights(net: nn.Module, scheme: str) -> None:
    """The sources' initialisations. `default` keeps PyTorch's."""
    for m in net.modules():
        if scheme == "xavier" and isinstance(m, (nn.Linear, nn.ConvTranspose2d)):  # CS231n initialize_weights
            nn.init.xavier_uniform_(m.weight)
        elif scheme == "dcgan" and isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):  # tutorial's weights_init
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif scheme == "dcgan" and isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    if scheme == "normal":  # d2l: every parameter ~ N(0, 0.02)
        for p in net.parameters():
            nn.init.normal_(p, 0.0, 0.02)


def build_models(cfg: MlpModel | ConvModel, data_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """G and D for data of `data_shape` (without the batch dim), initialised from the current torch RNG."""
    if isinstance(cfg, MlpModel):
        G, D = MlpG(cfg, data_shape), MlpD(cfg, data_shape)
    else:
        size = CONV_SIZES[cfg.arch]
        if len(data_shape) != 3 or data_shape[1:] != (size, size):
            raise ConfigError(f"arch {cfg.arch!r} is built for {size}x{size} images, but the data has shape "
                             f"{tuple(data_shape)}; set data.image_size: {size} or pick another dataset")
        G, D = CONV_FAMILIES[cfg.arch](cfg, data_shape[0])
    for net in (G, D):
        init_weights(net, cfg.init)
    return G, D


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_parameters(cfg: MlpModel | ConvModel, data_shape: tuple[int, ...]) -> int:
    """G's parameter count, without allocating it: built on the meta device (shapes, no memory), so a config from
    elsewhere that asks for a 40 GB network is refused before anything is allocated (tracking.load_generator)."""
    with torch.device("meta"):
        G, _ = build_models(cfg, data_shape)
    return n_params(G)
