"""The book's two analytic demos, computed rather than quoted.

- Appendix A: at the equilibrium D outputs 0.5 on everything; each D term then costs ln 2 (BCE) or 0.25 (MSE).
  We evaluate our own loss registry at score 0 (sigmoid 0 = 0.5), so the numbers check the implementation.
- Appendix D: simultaneous gradient play on f(x, y) = x·y (x ascends, y descends, both from the old point)
  spirals outwards: each step multiplies the radius by √(1 + lr²), so it never converges to the saddle (0, 0).
"""

from __future__ import annotations

import numpy as np
import torch

from ganlab.engine.losses import get_loss

XY_START, XY_LR, XY_STEPS = (0.6, 0.7), 0.1, 499  # Appendix D's run


def ideal_losses() -> dict[str, float]:
    """Each D term and G's loss at D(x) = 0.5, for the losses whose equilibrium the book states."""
    score = torch.zeros(1)  # raw score 0: sigmoid link 0.5; there the real and the fake term are equal
    return {name: float(get_loss(name).d_real(score)) for name in ("bce", "mse")}


def xy_game(start: tuple[float, float] = XY_START, lr: float = XY_LR, steps: int = XY_STEPS) -> np.ndarray:
    """The trajectory (steps + 1, 2) of x += lr·y, y −= lr·x (the old x), float64."""
    path = np.empty((steps + 1, 2))
    path[0] = start
    for i in range(steps):
        x, y = path[i]
        path[i + 1] = (x + lr * y, y - lr * x)
    return path


def xy_radius_growth(lr: float = XY_LR, steps: int = XY_STEPS) -> float:
    """The closed form of the radius ratio after `steps`: (1 + lr²)^(steps/2)."""
    return (1 + lr * lr) ** (steps / 2)
