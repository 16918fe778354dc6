"""Losses against hand-computed values and the equilibrium of book Appendix A."""

import math

import pytest
import torch
from torch.testing import assert_close

from ganlab.engine.losses import LOSSES, get_loss, gradient_penalty


@pytest.mark.parametrize("name, ideal", [("bce", math.log(2)), ("mse", 0.25)])
def test_equilibrium_d_outputs_one_half(name, ideal):
    loss, s = get_loss(name), torch.zeros(7)  # score 0 -> D(x) = sigmoid(0) = 0.5
    for term in (loss.d_real(s), loss.d_fake(s), loss.g(s)):
        assert_close(term, torch.tensor(ideal), rtol=0, atol=1e-7)
    assert loss.ideal == pytest.approx(ideal)


def test_lsgan_equilibrium():
    loss, s = get_loss("lsgan"), torch.full((5,), 0.5)  # the optimal D when p_g = p_data scores 1/2
    for term in (loss.d_real(s), loss.d_fake(s)):
        assert_close(term, torch.tensor(loss.ideal), rtol=0, atol=1e-7)
    assert loss.ideal == 0.125


def test_hand_computed_values():
    s = torch.tensor([2.0, -1.0])
    bce = get_loss("bce")
    # -log sigmoid(2) = log(1 + e^-2); -log sigmoid(-1) = log(1 + e)
    assert_close(bce.d_real(s), torch.tensor((math.log1p(math.exp(-2)) + math.log1p(math.e)) / 2))
    assert_close(bce.d_fake(s), torch.tensor((math.log1p(math.exp(2)) + math.log1p(math.exp(-1))) / 2))
    mse = get_loss("mse")
    p = [1 / (1 + math.exp(-2)), 1 / (1 + math.e)]
    assert_close(mse.d_real(s), torch.tensor(((p[0] - 1) ** 2 + (p[1] - 1) ** 2) / 2))
    ls = get_loss("lsgan")  # CS231n: 0.5 * mean((s - 1)^2), 0.5 * mean(s^2)
    assert_close(ls.d_real(s), torch.tensor(0.5 * (1 + 4) / 2))
    assert_close(ls.d_fake(s), torch.tensor(0.5 * (4 + 1) / 2))
    assert_close(ls.g(s), torch.tensor(0.5 * (1 + 4) / 2))
    hinge = get_loss("hinge")
    assert_close(hinge.d_real(s), torch.tensor((0 + 2) / 2))
    assert_close(hinge.d_fake(s), torch.tensor((3 + 0) / 2))
    w = get_loss("wgan_gp")
    assert_close(w.d_real(s), torch.tensor(-0.5))
    assert_close(w.d_fake(s), torch.tensor(0.5))
    assert w.penalty and not bce.penalty


def test_every_loss_has_its_parts_and_a_link():
    s = torch.randn(4)
    for loss in LOSSES.values():
        assert all(t.dim() == 0 for t in (loss.d_real(s), loss.d_fake(s), loss.g(s)))
        assert loss.link(s).shape == s.shape


def test_unknown_loss_names_the_allowed():
    with pytest.raises(ValueError, match="unknown loss 'foo'; allowed: bce, mse, lsgan, wgan_gp, hinge"):
        get_loss("foo")


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = w.x has gradient w everywhere, so the penalty is (|w| - 1)^2 exactly
    w = torch.tensor([3.0, 4.0, 0.0])
    penalty = gradient_penalty(lambda x, y: x @ w, torch.randn(6, 3), torch.randn(6, 3), None, torch.rand(6, 1))
    assert_close(penalty, torch.tensor((5.0 - 1.0) ** 2))


def test_params_accept_exactly_the_registrys_losses():
    """config.LOSSES (what params.yaml may name) and the registry are one list."""
    from ganlab import config

    assert set(config.LOSSES) == set(LOSSES)


@pytest.mark.parametrize("name", ["bce", "mse"])
@pytest.mark.parametrize("batch", [1, 5])
def test_hand_written_objective_is_the_registrys_loss(name, batch):
    """The hand-written MLP step's objective (mlp_steps.Objective: value, D(x), dL/dscores) equals the registry's
    loss, its link and autograd's gradient, for every loss the hand-written step accepts."""
    from ganlab.engine.mlp_steps import Objective

    loss = get_loss(name)
    scores = torch.randn(batch, 1, generator=torch.Generator().manual_seed(batch), dtype=torch.float32) * 3
    objective = Objective(name, scores, batch)
    for target, term in ((1.0, loss.d_real), (0.0, loss.d_fake), (1.0, loss.g)):
        s = scores.clone().requires_grad_(True)
        want = term(s.view(-1))  # the autograd path's scores are (B,)
        want.backward()
        value, d_x, grad = objective(scores, target)
        assert_close(value, want.detach(), rtol=1e-6, atol=1e-7)
        assert_close(d_x, loss.link(scores).mean(), rtol=1e-6, atol=1e-7)
        assert_close(grad, s.grad, rtol=1e-5, atol=1e-7)
    others = [n for n in LOSSES if n not in ("bce", "mse")]
    assert others and all("model.loss" in (supported_reason(n) or "") for n in others)


def supported_reason(loss: str):
    from ganlab.config import load_params
    from ganlab.engine.mlp_steps import supported
    from helpers import REPO

    cfg = load_params(REPO / "params.yaml").variant("mnist_mlp")
    return supported(cfg.model_copy(update={"model": cfg.model.model_copy(update={"loss": loss})}))
