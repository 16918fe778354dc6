"""Networks: the sources' parameter counts (oracles), shapes, and raw-score discriminators."""

import pytest
import torch

from ganlab.config import load_params
from ganlab.engine.models import build_models, n_params
from helpers import REPO

PARAMS = load_params(REPO / "params.yaml")
MNIST = (1, 28, 28)
SHAPES = {"pattern_1010": (4,), "gaussian_2d": (2,), "mnist_dcgan64": (1, 64, 64), "celeba_mlp": (3, 218, 178),
          "celeba_cnn": (3, 128, 128), "celeba_cnn_gelu": (3, 128, 128), "celeba_dcgan": (3, 64, 64),
          "celeba_wgan_gp": (3, 64, 64)}


def models(name, **model_changes):
    cfg = PARAMS.variant(name)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update=model_changes)})
    shape = SHAPES.get(name, MNIST)
    return build_models(cfg.model, shape)


@pytest.mark.parametrize("name, nz, d_count, g_count", [
    # CS231n states these; its generator counts are for noise_dim 4 (`G(noise_dim=4)` in its checks)
    ("mnist_vanilla", 4, 267_009, 1_858_320),
    ("mnist_dcgan", 4, 1_102_721, 6_580_801),
])
def test_cs231n_parameter_counts(name, nz, d_count, g_count):
    G, D = models(name, nz=nz)
    assert (n_params(D), n_params(G)) == (d_count, g_count)


def linear(a, b):
    return a * b + b


@pytest.mark.parametrize("name, d_count, g_count", [
    # computed from the book's layer lists (variants.md A2-A4, A9); LayerNorm(200) has 400 parameters
    ("pattern_1010", linear(4, 3) + linear(3, 1), linear(1, 3) + linear(3, 4)),
    ("mnist_mlp_first", linear(784, 200) + linear(200, 1), linear(1, 200) + linear(200, 784)),
    ("mnist_mlp", linear(784, 200) + 400 + linear(200, 1), linear(100, 200) + 400 + linear(200, 784)),
    ("mnist_cgan", linear(794, 200) + 400 + linear(200, 1), linear(110, 200) + 400 + linear(200, 784)),
    ("gaussian_2d", linear(2, 5) + linear(5, 3) + linear(3, 1), linear(2, 2)),
    ("mnist_linear", linear(784, 256) + linear(256, 256) + linear(256, 1),
     linear(100, 256) + linear(256, 256) + linear(256, 784)),
])
def test_book_and_other_mlp_parameter_counts(name, d_count, g_count):
    G, D = models(name)
    assert (n_params(D), n_params(G)) == (d_count, g_count)


def test_dcgan64_parameter_counts():
    # DCGAN tutorial networks, nc=1, ngf=ndf=64, no biases; BatchNorm 2 parameters per channel
    g = 100 * 512 * 16 + 512 * 256 * 16 + 256 * 128 * 16 + 128 * 64 * 16 + 64 * 1 * 16 + 2 * (512 + 256 + 128 + 64)
    d = 1 * 64 * 16 + 64 * 128 * 16 + 128 * 256 * 16 + 256 * 512 * 16 + 512 * 16 + 2 * (128 + 256 + 512)
    G, D = models("mnist_dcgan64")
    assert (n_params(D), n_params(G)) == (d, g)


def test_wgan_critic_without_batchnorm():
    cfg = PARAMS.variant("mnist_dcgan64").model.model_copy(update={"d_norm": "none"})
    _, D = build_models(cfg, (1, 64, 64))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())


@pytest.mark.parametrize("name", sorted(PARAMS.variants))
def test_shapes_and_raw_scores(name):
    cfg = PARAMS.variant(name)
    G, D = models(name)
    n = 5
    z = torch.randn(n, cfg.model.nz)
    y = torch.arange(n) % cfg.model.n_classes if cfg.model.n_classes else None
    fake = G(z, y)
    assert tuple(fake.shape) == (n, *SHAPES.get(name, MNIST))
    scores = D(fake, y)
    assert scores.shape == (n,)
    # raw scores: D has no final Sigmoid, so a large input pushes a score outside [0, 1]
    assert not isinstance(list(D.modules())[-1], torch.nn.Sigmoid)


def test_conv_size_mismatch_is_a_clear_error():
    from ganlab.config import ConfigError
    with pytest.raises(ConfigError, match=r"arch 'dcgan64' is built for 64x64 images.*data.image_size: 64"):
        build_models(PARAMS.variant("mnist_dcgan64").model, MNIST)


def conv(cin, cout, k):
    return cin * cout * k * k + cout


def test_book_celeba_parameter_counts():
    # A6: Linear(116412,100), LN(100), Linear(100,1) / Linear(100,300), LN(300), Linear(300,116412)
    G, D = models("celeba_mlp")
    assert n_params(D) == linear(218 * 178 * 3, 100) + 200 + linear(100, 1)
    assert n_params(G) == linear(100, 300) + 600 + linear(300, 218 * 178 * 3)
    # A7: three 8x8 stride-2 convolutions with BatchNorm(256) after the first two, then Linear(300, 1)
    d = conv(3, 256, 8) + 512 + conv(256, 256, 8) + 512 + conv(256, 3, 8) + linear(300, 1)
    g = linear(100, 3 * 11 * 11) + conv(3, 256, 8) + 512 + conv(256, 256, 8) + 512 + conv(256, 3, 8) + 6
    for name in ("celeba_cnn", "celeba_cnn_gelu"):
        G, D = models(name)
        assert (n_params(D), n_params(G)) == (d, g) == (4_294_448, 4_330_816)
    G, D = models("celeba_cnn_gelu")
    assert any(isinstance(m, torch.nn.GELU) for m in G.modules())
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in (*G.modules(), *D.modules()))
