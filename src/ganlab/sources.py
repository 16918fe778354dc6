"""What the sources state, in one place, each number with its citation (docs/variants.md).

The report lays every entry beside our measurement of the same quantity. `quantity` names our value:
- eval.json keys: `pattern`, `pattern_mae`, `d_loss` (D's two terms summed, as CS231n prints it),
  `d_loss_per_term` (the mean of D's real and fake terms: the book logs each D call, real and fake alternating,
  and d2l halves the sum), `g_loss`, `class_coverage`, `cgan_accuracy`, `nn_memorization`;
- train.json keys: `wall_time_s`, and derived: `peak_memory_gib` (bytes / 2³⁰), `wall_time_per_epoch_s` (eval.json:
  the run's time per full pass over its data, also when `train.max_steps` cut it short);
- classifier.json: `test_accuracy` of subject `classifier.<name>`; `theory`: the appendix demos.
An entry without a value is a claim stated in words; the report shows our evidence for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

Value = Union[float, tuple[float, ...], None]

BOOK = "Rashid, Make Your First GAN With PyTorch (2020)"
CS231N = "CS231n 2020 assignment 3, a student's logged run (for orientation only)"

BOOK_1010_OUTPUT = (0.9387, 0.0527, 0.9389, 0.0474)  # notebook 06's final G(0.5)
PATTERN = (1.0, 0.0, 1.0, 0.0)


# Every variant the project reproduces, with where it comes from: the report names those that did not run.
CATALOG: dict[str, str] = {
    "pattern_1010": "book nb 06", "gaussian_2d": "d2l", "mnist_mlp_first": "book nb 07", "mnist_mlp": "book nb 08/09",
    "mnist_cgan": "book nb 16", "mnist_vanilla": "CS231n", "mnist_lsgan": "CS231n", "mnist_dcgan": "CS231n",
    "mnist_dcgan64": "DCGAN post", "mnist_linear": "blog", "mnist_conv": "blog", "mnist_wgan_gp": "WGAN-GP (ours)",
    "celeba_mlp": "book nb 12", "celeba_cnn": "book nb 14", "celeba_cnn_gelu": "book nb 15",
    "celeba_dcgan": "PyTorch DCGAN tutorial", "celeba_wgan_gp": "WGAN-GP (ours)",
}


@dataclass(frozen=True)
class Stated:
    subject: str  # a variant name, `classifier.<name>`, or `theory`
    quantity: str  # the key of our value it compares with (see the module docstring)
    value: Value  # None: a claim in words (`note`)
    source: str  # the citation
    note: str = ""  # how to read the comparison: hardware, approximation, what differs from our run


STATED: tuple[Stated, ...] = (
    # --- the book, chapter 1: the only accuracy table (variants.md A1)
    Stated("classifier.mlp", "test_accuracy", 0.88, f"{BOOK}, §1.2, notebook 03", "0.87-0.88 after 3-4 epochs"),
    Stated("classifier.mlp_refined", "test_accuracy", 0.9724, f"{BOOK}, §1.3, notebook 04"),
    Stated("classifier.cnn", "test_accuracy", 0.9814, f"{BOOK}, §3.1, notebook 13",
           "batch 1, 3 epochs; ours is the evaluator, trained batched for more epochs"),
    Stated("classifier.mlp", "wall_time_s", 370.0, f"{BOOK}, notebook 03", "6 min 10 s, Colab CPU, batch 1"),
    Stated("classifier.mlp_refined", "wall_time_s", 808.0, f"{BOOK}, notebook 04", "13 min 28 s, Colab CPU"),
    Stated("classifier.cnn", "wall_time_s", 572.0, f"{BOOK}, notebook 13", "9 min 32 s, Colab CPU, batch 1"),
    # --- the book's GANs (variants.md A2-A9)
    Stated("pattern_1010", "pattern", BOOK_1010_OUTPUT, f"{BOOK}, §2.2, notebook 06", "final G output"),
    Stated("pattern_1010", "pattern_mae", sum(abs(a - b) for a, b in zip(BOOK_1010_OUTPUT, PATTERN)) / 4,
           f"{BOOK}, §2.2, notebook 06", "derived from the stated final output"),
    Stated("pattern_1010", "d_loss_per_term", 0.25, f"{BOOK}, §2.2", "D loss settles at the MSE equilibrium"),
    Stated("pattern_1010", "wall_time_s", 16.3, f"{BOOK}, §2.2", "10,000 iterations on CPU"),
    Stated("mnist_mlp_first", "class_coverage", None, f"{BOOK}, §2.3.7",
           "all generated images look alike (mode collapse); D loss falls to ~0, G loss rises"),
    Stated("mnist_mlp_first", "wall_time_s", 286.0, f"{BOOK}, §2.3", "4 min 46 s, 1 epoch on CPU"),
    Stated("mnist_mlp", "class_coverage", None, f"{BOOK}, §2.3.9", "mode collapse gone: varied digits"),
    Stated("mnist_mlp", "g_loss", 3.0, f"{BOOK}, §2.3.9", "≈ 3, read from the book's loss plot"),
    Stated("mnist_mlp", "d_loss_per_term", 0.0, f"{BOOK}, §2.3.9", "near 0 with spikes (the book's plot)"),
    Stated("mnist_mlp", "wall_time_s", 1805.0, f"{BOOK}, §2.3.9", "30 min 5 s for 4 epochs on CPU"),
    Stated("mnist_cgan", "cgan_accuracy", None, f"{BOOK}, §3.2", "images of the requested digit, varied"),
    Stated("mnist_cgan", "wall_time_s", 5340.0, f"{BOOK}, §3.2", "1 h 29 min for 12 epochs on CPU"),
    Stated("celeba_mlp", "d_loss_per_term", math.log(2), f"{BOOK}, §2.4.12", "settles near ln 2"),
    Stated("celeba_mlp", "g_loss", math.log(2), f"{BOOK}, §2.4.12", "settles near ln 2"),
    Stated("celeba_mlp", "peak_memory_gib", 1.09, f"{BOOK}, §2.4.12", "peak CUDA memory, printed as GB"),
    Stated("celeba_mlp", "wall_time_per_epoch_s", 585.0, f"{BOOK}, §2.4.12", "9 min 45 s per epoch, Tesla T4"),
    Stated("celeba_cnn", "peak_memory_gib", 0.20, f"{BOOK}, §3.1.7", "peak CUDA memory, ≈ 20 % of celeba_mlp"),
    Stated("celeba_cnn", "wall_time_per_epoch_s", 930.0, f"{BOOK}, §3.1.7", "15-16 min per epoch, Tesla P100"),
    # --- CS231n (variants.md B): D loss is the sum of its two BCE terms
    Stated("mnist_vanilla", "d_loss", 1.34, CS231N, "the last printed iteration"),
    Stated("mnist_vanilla", "g_loss", 0.83, CS231N, "the last printed iteration"),
    Stated("mnist_lsgan", "d_loss", 0.23, CS231N, "the last printed iteration"),
    Stated("mnist_lsgan", "g_loss", 0.16, CS231N, "the last printed iteration"),
    Stated("mnist_dcgan", "d_loss", 1.30, CS231N, "the last printed iteration"),
    Stated("mnist_dcgan", "g_loss", 1.58, CS231N, "the last printed iteration"),
    # --- DCGAN post (variants.md C)
    Stated("mnist_dcgan64", "wall_time_per_epoch_s", 67.0, "DCGAN post on 64x64 MNIST (docs/variants.md C)",
           "1 min 6-8 s per epoch of 700 steps on the author's GPU"),
    # --- d2l (variants.md E): D loss is the mean of its two terms
    Stated("gaussian_2d", "d_loss_per_term", math.log(2), "d2l, Generative Adversarial Networks", "≈ 0.693"),
    Stated("gaussian_2d", "g_loss", math.log(2), "d2l, Generative Adversarial Networks", "≈ 0.693"),
    # --- the book's appendices (variants.md A10)
    Stated("theory", "ideal_bce", math.log(2), f"{BOOK}, Appendix A", "each D term when D outputs 0.5"),
    Stated("theory", "ideal_mse", 0.25, f"{BOOK}, Appendix A", "each D term when D outputs 0.5"),
    Stated("theory", "xy_radius_growth", 12.0, f"{BOOK}, Appendix D",
           "≈ ×12 after 499 steps of simultaneous gradient play on x·y"),
    Stated("theory", "nn_memorization", None, f"{BOOK}, Appendix B", "GANs do not memorise their training data"),
)


def stated_for(subject: str) -> list[Stated]:
    return [s for s in STATED if s.subject == subject]


def difference(ours: Value, stated: Value) -> Optional[Union[float, tuple[float, ...]]]:
    """ours − stated, element-wise for vectors; None when either is missing."""
    if ours is None or stated is None:
        return None
    if isinstance(stated, tuple):
        return tuple(a - b for a, b in zip(ours, stated))  # type: ignore[arg-type]
    return float(ours) - stated  # type: ignore[arg-type]
