"""What the sources state, in one place, each number with its citation (docs/variants.md).

The report lays every entry beside our measurement of the same quantity. `quantity` names our value:
- eval.json keys: `pattern`, `pattern_mae`, `d_loss` (D's two terms summed, as CS231n prints it),
  `d_loss_per_term` (the mean of D's real and fake terms: the book logs each D call, real and fake alternating,
  and d2l halves the sum), `g_loss`, `class_coverage`, `largest_class_share` and `unrecognisable_share` (the
  class histogram of the samples the evaluator can read, and the share it cannot), `cgan_accuracy`,
  `nn_memorization`;
- train.json keys, and derived: `peak_memory_gib` (bytes / 2³⁰), `seconds_per_image` (wall time over the images
  trained on: a source's time for its whole run, divided by the images that run saw, compares with ours also when
  `train.max_steps` cut ours short);
- classifier.json: `test_accuracy`, `seconds_per_image` of subject `classifier.<name>`; `theory`: the appendix demos;
- `study.losses`: the committed loss study (docs/studies/losses.md, its verdicts file `STUDY_FILES`):
  `better_than_bce`, per loss 1 when the study judged it better than `bce` on FID, else 0.
An entry without a value is a claim stated in words (`note`), tested by its rule on our number.

Every entry carries its verdict's mechanism: `like`, the conditions under which our run is like the source's
(device kind, batch size, training-set size, the source's full schedule...), and `rule`, how close our number must
be for the claim to hold. `judge` turns (entry, our number, our run's context) into "holds", "does not hold",
"not comparable" (a condition differs: said which) or "not measured", with the reason in words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ganlab.data.toy import PATTERN

Value = Union[float, tuple[float, ...], None]

BOOK = "Rashid, Make Your First GAN With PyTorch (2020)"
CS231N = "CS231n 2020 assignment 3, a student's logged run (for orientation only)"

LUCIC = "Lucic et al., Are GANs Created Equal? A Large-Scale Study (NeurIPS 2018)"
STUDY_FILES = {"study.losses": "docs/studies/losses_verdicts.json"}  # a study's committed verdicts, in the repository
BOOK_1010_OUTPUT = (0.9387, 0.0527, 0.9389, 0.0474)  # notebook 06's final G(0.5)


# Every variant the project reproduces, with where it comes from: the report names those that did not run.
CATALOG: dict[str, str] = {
    "pattern_1010": "book nb 06", "gaussian_2d": "d2l", "mnist_mlp_first": "book nb 07", "mnist_mlp": "book nb 08/09",
    "mnist_cgan": "book nb 16", "mnist_vanilla": "CS231n", "mnist_lsgan": "CS231n", "mnist_dcgan": "CS231n",
    "mnist_dcgan64": "DCGAN post", "mnist_linear": "blog", "mnist_conv": "blog", "mnist_wgan_gp": "WGAN-GP (ours)",
    "celeba_mlp": "book nb 12", "celeba_cnn": "book nb 14", "celeba_cnn_gelu": "book nb 15",
    "celeba_dcgan": "PyTorch DCGAN tutorial", "celeba_wgan_gp": "WGAN-GP (ours)",
}


Measured = Union[float, tuple[float, ...], dict[str, float], None]  # dict: one number per variant
HOLDS, FAILS, UNLIKE, MISSING = "holds", "does not hold", "not comparable", "not measured"


@dataclass(frozen=True)
class Verdict:
    outcome: str  # HOLDS | FAILS | UNLIKE | MISSING
    text: str  # why, with the numbers


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


@dataclass(frozen=True)
class Close:
    """Holds when |ours − stated| ≤ max(absolute, rel·|stated|), element by element for a vector."""

    rel: float = 0.1
    absolute: float = 0.0

    def judge(self, ours: Measured, stated: Value) -> Verdict:
        pairs = list(zip(ours, stated)) if isinstance(stated, tuple) else [(ours, stated)]  # type: ignore
        worst = max(abs(float(a) - b) - max(self.absolute, self.rel * abs(b)) for a, b in pairs)
        tol = " and ".join(t for t in ((f"±{self.rel:.0%}" if self.rel else ""),
                                       (f"±{_num(self.absolute)}" if self.absolute else "")) if t)
        diffs = ", ".join(f"{float(a) - b:+.3g}" for a, b in pairs)
        return Verdict(HOLDS if worst <= 0 else FAILS, f"ours − stated = {diffs}; tolerance {tol}")


@dataclass(frozen=True)
class Bound:
    """A claim in words tested on our number: holds when ours ≥ `at_least` and ≤ `at_most`; for one number per
    variant, when every variant's does."""

    at_least: Optional[float] = None
    at_most: Optional[float] = None
    reads: str = ""  # what the bound means: "at most 2 digits produced = mode collapse"

    def judge(self, ours: Measured, stated: Value) -> Verdict:
        values = ours if isinstance(ours, dict) else {"": ours}
        bad = {k: v for k, v in values.items() if (self.at_least is not None and v < self.at_least)
               or (self.at_most is not None and v > self.at_most)}  # type: ignore[operator]
        bound = " and ".join(t for t in ((f"≥ {_num(self.at_least)}" if self.at_least is not None else ""),
                                         (f"≤ {_num(self.at_most)}" if self.at_most is not None else "")) if t)
        where = f" (not so for {', '.join(f'{k} {_num(v)}' for k, v in bad.items())})" if bad and \
            isinstance(ours, dict) else ""
        return Verdict(FAILS if bad else HOLDS, f"the claim holds when ours is {bound}: {self.reads}{where}")


@dataclass(frozen=True)
class Factor:
    """Holds when ours is within a factor of the stated number (timings on other hardware of the same kind)."""

    factor: float = 3.0

    def judge(self, ours: Measured, stated: Value) -> Verdict:
        ratio = float(ours) / float(stated)  # type: ignore[arg-type]
        ok = 1 / self.factor <= ratio <= self.factor
        return Verdict(HOLDS if ok else FAILS, f"ours is ×{ratio:.3g} the stated; holds within ×{_num(self.factor)} "
                                               f"either way")


Rule = Union[Close, Bound, Factor]
FULL_RUN = {"full_run": True}  # the claim is about the end of the source's schedule, with its recipe


@dataclass(frozen=True)
class Stated:
    subject: str  # a variant name, `classifier.<name>`, or `theory`
    quantity: str  # the key of our value it compares with (see the module docstring)
    value: Value  # None: a claim in words (`note`)
    source: str  # the citation
    note: str = ""  # how to read the comparison: hardware, approximation, what differs from our run
    rule: Rule = Close()
    like: dict[str, Any] = field(default_factory=lambda: dict(FULL_RUN))  # our run's context must match


def judge(s: Stated, ours: Measured, context: dict[str, Any]) -> Verdict:
    """The verdict on one entry, given our number and our run's context (report.claims.run_context: device, batch_size,
    n_train, epochs, long_enough, full_run; `<key>_why` says in words why a condition is false)."""
    if ours is None or (isinstance(ours, dict) and not ours):
        return Verdict(MISSING, "we have no number for it (the stage did not run, or does not measure it)")
    unlike = [k for k, want in s.like.items() if context.get(k) != want]
    if unlike:
        why = [context[f"{k}_why"] for k in unlike if f"{k}_why" in context]  # a condition that says itself
        plain = [k for k in unlike if f"{k}_why" not in context]
        if plain:
            why.insert(0, "the source: " + ", ".join(f"{k} {s.like[k]}" for k in plain) + "; ours: " +
                       ", ".join(f"{k} {context.get(k, 'unknown')}" for k in plain))
        return Verdict(UNLIKE, "; ".join(why))
    return s.rule.judge(ours, s.value)


# Our run's context for the timings: per image on the same kind of device at the same batch size, timed over
# enough images that start-up does not dominate (`long_enough`: MIN_TIMED_IMAGES). A source's time of a whole run
# is divided by the images that run saw (MNIST train: 60,000; the book's CelebA: 20,000).
MIN_TIMED_IMAGES = 1000
TIMED = {"long_enough": True}
CPU1 = {"device": "cpu", "batch_size": 1, **TIMED}
GPU1 = {"device": "cuda", "batch_size": 1, **TIMED}
BOOK_CLF = {"n_train": 60_000, "epochs": 3, "batch_size": 1}  # the book's chapter-1 recipe
LOSS_NEAR = Close(rel=0.0, absolute=0.1)  # a loss the source reads off a plot or one noisy iteration
LAST_ITERATION = Close(rel=0.3)  # CS231n's last printed iteration: one batch, not a mean

STATED: tuple[Stated, ...] = (
    # --- the book, chapter 1: the only accuracy table (variants.md A1)
    Stated("classifier.mlp", "test_accuracy", 0.88, f"{BOOK}, §1.2, notebook 03", "0.87-0.88 after 3-4 epochs",
           Close(rel=0.0, absolute=0.01), BOOK_CLF),
    Stated("classifier.mlp_refined", "test_accuracy", 0.9724, f"{BOOK}, §1.3, notebook 04", "",
           Close(rel=0.0, absolute=0.01), BOOK_CLF),
    Stated("classifier.cnn", "test_accuracy", 0.9814, f"{BOOK}, §3.1, notebook 13",
           "batch 1, 3 epochs; ours is the evaluator, trained batched for more epochs",
           Close(rel=0.0, absolute=0.01), BOOK_CLF),
    Stated("classifier.mlp", "seconds_per_image", 370.0 / 180_000, f"{BOOK}, notebook 03",
           "6 min 10 s for 3 epochs of 60,000 images, Colab CPU, batch 1", Factor(), CPU1),
    Stated("classifier.mlp_refined", "seconds_per_image", 808.0 / 180_000, f"{BOOK}, notebook 04",
           "13 min 28 s for 3 epochs of 60,000 images, Colab CPU, batch 1", Factor(), CPU1),
    Stated("classifier.cnn", "seconds_per_image", 572.0 / 180_000, f"{BOOK}, notebook 13",
           "9 min 32 s for 3 epochs of 60,000 images, Colab CPU, batch 1", Factor(), CPU1),
    # --- the book's GANs (variants.md A2-A9)
    Stated("pattern_1010", "pattern", BOOK_1010_OUTPUT, f"{BOOK}, §2.2, notebook 06", "final G output",
           Close(rel=0.0, absolute=0.1)),
    Stated("pattern_1010", "pattern_mae", sum(abs(a - b) for a, b in zip(BOOK_1010_OUTPUT, PATTERN)) / 4,
           f"{BOOK}, §2.2, notebook 06", "derived from the stated final output", Close(rel=0.0, absolute=0.05)),
    Stated("pattern_1010", "d_loss_per_term", 0.25, f"{BOOK}, §2.2", "D loss settles at the MSE equilibrium",
           Close(rel=0.0, absolute=0.05)),
    Stated("pattern_1010", "seconds_per_image", 16.3 / 10_000, f"{BOOK}, §2.2",
           "16.3 s for 10,000 iterations of one pattern on CPU", Factor(), CPU1),
    Stated("mnist_mlp_first", "class_coverage", None, f"{BOOK}, §2.3.7",
           "all generated images look alike (mode collapse); D loss falls to ~0, G loss rises",
           Bound(at_most=2, reads="the evaluator reads at most 2 digits in the samples: one look")),
    Stated("mnist_mlp_first", "seconds_per_image", 286.0 / 60_000, f"{BOOK}, §2.3",
           "4 min 46 s for 1 epoch of 60,000 images on CPU", Factor(), CPU1),
    Stated("mnist_mlp", "class_coverage", None, f"{BOOK}, §2.3.9", "mode collapse gone: varied digits",
           Bound(at_least=8, reads="the evaluator reads 8 or more of the 10 digits")),
    # Our study of that claim (docs/studies/mnist_mlp_seeds.json, docs/fidelity.md): no collapse onto one digit, but
    # an uneven balance the book does not mention, and a strong dependence on how many distinct digits it sees.
    Stated("mnist_mlp", "largest_class_share", None, f"{BOOK}, §2.3.9",
           "varied digits; their balance is not stated. Our study at the book's schedule on all 60,000 digits, seeds "
           "0, 1, 2: 7, 7, 8 digits at >= 2 % of the readable samples (5, 5, 5 at >= 5 %); the largest class 28 % "
           "('3'), 35 % ('9'), 39 % ('3'); '1' and '6' under 1 % each. On 4,000 distinct digits: '3' 50 % after "
           "60,000 steps (15 passes), 56 % after the book's 240,000 (60 passes). An independent check: seeds 0, 1, 2 "
           "at 7, 6, 6 digits >= 5 % (largest 28 %, 36 %, 29 %); 4,000 digits at 240,000 steps: 3 digits, 87 % '0'",
           Bound(at_most=0.5, reads="no digit takes half of the readable samples (no collapse onto one digit)")),
    Stated("mnist_mlp", "unrecognisable_share", None, f"{BOOK}, §2.3.9",
           "varied digits, i.e. samples that read as digits. Our study, seeds 0, 1, 2 at the book's schedule: 14.1, "
           "13.6, 13.2 % of the samples read with less confidence than 99 % of the real test digits; 15 % and 10 % "
           "on 4,000 digits (15 and 60 passes)",
           Bound(at_most=0.2, reads="at most a fifth of the samples are blobs the evaluator cannot read")),
    Stated("mnist_mlp", "g_loss", 3.0, f"{BOOK}, §2.3.9", "≈ 3, read from the book's loss plot", Close(rel=0.3)),
    Stated("mnist_mlp", "d_loss_per_term", 0.0, f"{BOOK}, §2.3.9", "near 0 with spikes (the book's plot)",
           LOSS_NEAR),
    Stated("mnist_mlp", "seconds_per_image", 1805.0 / 240_000, f"{BOOK}, §2.3.9",
           "30 min 5 s for 4 epochs of 60,000 images on CPU", Factor(), CPU1),
    Stated("mnist_cgan", "cgan_accuracy", None, f"{BOOK}, §3.2", "images of the requested digit, varied",
           Bound(at_least=0.8, reads="the evaluator reads the requested digit in 80 % of the samples or more")),
    Stated("mnist_cgan", "seconds_per_image", 5340.0 / 720_000, f"{BOOK}, §3.2",
           "1 h 29 min for 12 epochs of 60,000 images on CPU", Factor(), CPU1),
    Stated("celeba_mlp", "d_loss_per_term", math.log(2), f"{BOOK}, §2.4.12", "settles near ln 2", LOSS_NEAR),
    Stated("celeba_mlp", "g_loss", math.log(2), f"{BOOK}, §2.4.12", "settles near ln 2", LOSS_NEAR),
    Stated("celeba_mlp", "peak_memory_gib", 1.09, f"{BOOK}, §2.4.12", "peak CUDA memory, printed as GB",
           Close(rel=0.25), GPU1),
    Stated("celeba_mlp", "seconds_per_image", 585.0 / 20_000, f"{BOOK}, §2.4.12",
           "9 min 45 s per epoch of 20,000 faces, Tesla T4", Factor(), GPU1),
    Stated("celeba_cnn", "peak_memory_gib", 0.20, f"{BOOK}, §3.1.7", "peak CUDA memory, ≈ 20 % of celeba_mlp",
           Close(rel=0.25), GPU1),
    Stated("celeba_cnn", "seconds_per_image", 930.0 / 20_000, f"{BOOK}, §3.1.7",
           "15-16 min per epoch of 20,000 faces, Tesla P100", Factor(), GPU1),
    # --- CS231n (variants.md B): D loss is the sum of its two BCE terms
    Stated("mnist_vanilla", "d_loss", 1.34, CS231N, "the last printed iteration", LAST_ITERATION),
    Stated("mnist_vanilla", "g_loss", 0.83, CS231N, "the last printed iteration", LAST_ITERATION),
    Stated("mnist_lsgan", "d_loss", 0.23, CS231N, "the last printed iteration", LAST_ITERATION),
    Stated("mnist_lsgan", "g_loss", 0.16, CS231N, "the last printed iteration", LAST_ITERATION),
    Stated("mnist_dcgan", "d_loss", 1.30, CS231N, "the last printed iteration", LAST_ITERATION),
    Stated("mnist_dcgan", "g_loss", 1.58, CS231N, "the last printed iteration", LAST_ITERATION),
    # --- DCGAN post (variants.md C)
    Stated("mnist_dcgan64", "seconds_per_image", 67.0 / 70_000, "DCGAN post on 64x64 MNIST (docs/variants.md C)",
           "1 min 6-8 s per epoch of 700 steps of 100 images (train + test) on the author's GPU", Factor(),
           {"device": "cuda", "batch_size": 100, **TIMED}),
    # --- d2l (variants.md E): D loss is the mean of its two terms
    Stated("gaussian_2d", "d_loss_per_term", math.log(2), "d2l, Generative Adversarial Networks", "≈ 0.693",
           LOSS_NEAR),
    Stated("gaussian_2d", "g_loss", math.log(2), "d2l, Generative Adversarial Networks", "≈ 0.693", LOSS_NEAR),
    # --- the book's appendices (variants.md A10): computed, so no run context applies
    Stated("theory", "ideal_bce", math.log(2), f"{BOOK}, Appendix A", "each D term when D outputs 0.5",
           Close(rel=0.0, absolute=1e-6), {}),
    Stated("theory", "ideal_mse", 0.25, f"{BOOK}, Appendix A", "each D term when D outputs 0.5",
           Close(rel=0.0, absolute=1e-6), {}),
    Stated("theory", "xy_radius_growth", 12.0, f"{BOOK}, Appendix D",
           "≈ ×12 after 499 steps of simultaneous gradient play on x·y", Close(rel=0.05), {}),
    Stated("study.losses", "better_than_bce", None, LUCIC,
           "no loss consistently beats the non-saturating GAN (bce), given enough random restarts",
           Bound(at_most=0, reads="no loss judged better than bce on FID (1 = judged better) by the loss study: "
                                  "mnist_vanilla's networks, full MNIST, several seeds per loss, ganlab compare's "
                                  "statistics (docs/studies/losses.md)"),
           {"judged": True}),
    Stated("theory", "nn_memorization", None, f"{BOOK}, Appendix B", "GANs do not memorise their training data",
           Bound(at_most=0.75, reads="for every variant, at most 75 % of the samples are nearer a training "
                                     "image than training images are to each other (fresh draws: about 50 %)"), {}),
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
