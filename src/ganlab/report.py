"""Stage report: every variant's numbers in one table, each beside what its source states -> reports/report.{md,html}.

It reads what the other stages left under the repository root: metrics/<v>/{train,eval}.json,
metrics/classifier.json, plots/<v>/losses.csv and samples/<v>/sample/*.png. A variant without metrics is
listed as missing, never an error, so the report builds from any subset of variants (a tiny pipeline, a machine
without CelebA). Pictures are copied into reports/img/, so both files open from the file system.
"""

from __future__ import annotations

import html
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ganlab.config import Params
from ganlab.figures import xy_game_figure
from ganlab.io import atomic_path, atomic_write, read_json
from ganlab.plots import loss_curves
from ganlab.sources import CATALOG, STATED, Stated, difference
from ganlab.theory import XY_LR, XY_START, XY_STEPS, ideal_losses, xy_game, xy_radius_growth

Block = tuple  # ("h", level, text) | ("p", text) | ("table", header, rows) | ("img", relative path, caption)

# The table of all variants: (key in a variant's values, column header).
COLUMNS = (
    ("source", "source"), ("loss", "loss"), ("d_real", "D real"), ("d_fake", "D fake"), ("g_loss", "G"),
    ("ideal", "ideal"), ("fid_mnist", "FID (MNIST clf)"), ("kid_mnist", "KID (MNIST clf)"),
    ("precision", "precision"), ("recall", "recall"), ("class_coverage", "digits"), ("class_kl", "class KL"),
    ("cgan_accuracy", "cGAN acc."), ("nn_memorization", "NN memo."), ("pattern_mae", "1010 MAE"),
    ("mean_error", "mean err"), ("cov_error", "cov err"), ("fid_pixels16", "FID pixels16"),
    ("pixel_mean_dist", "pixel mean Δ"), ("fid_inception", "FID Inception"), ("steps", "steps"),
    ("epochs_done", "epochs"), ("wall_time_s", "train s"), ("wall_time_per_epoch_s", "s/epoch"),
    ("images_per_s", "images/s"), ("peak_memory_gib", "peak GiB"),
)
CLASSIFIERS = {  # metrics/classifier.json entry -> the book's network (variants.md A1)
    "mlp": "nb 03: Linear(784,200), Sigmoid, Linear(200,10), Sigmoid",
    "mlp_refined": "nb 04: Linear(784,200), LeakyReLU(0.02), LayerNorm, Linear(200,10), Sigmoid",
    "cnn": "nb 13: Conv(1,10,5,2), LReLU, BN, Conv(10,10,3,2), LReLU, BN, Linear(250,10), Sigmoid",
}
EVALUATOR_TARGET = 0.985


# --------------------------------------------------------------------------------------------------- inputs
def _json(path: Path) -> Optional[dict[str, Any]]:
    return read_json(path) if path.exists() else None


@dataclass
class VariantResult:
    name: str
    source: str
    train: Optional[dict[str, Any]]
    eval: Optional[dict[str, Any]]
    losses_csv: Optional[Path]
    pictures: list[Path] = field(default_factory=list)

    def values(self) -> dict[str, Any]:
        """train.json, then eval.json over it (its final losses are means over the run's end, not the last row),
        and the derived quantities the sources state."""
        v: dict[str, Any] = {"source": self.source, **(self.train or {}), **(self.eval or {})}
        if self.train:
            v["peak_memory_gib"] = self.train["peak_memory_bytes"] / 2 ** 30
        return v


def collect(params: Params, root: Path) -> list[VariantResult]:
    """Every configured variant that left metrics, in params.yaml's order."""
    out = []
    for name in params.variants:
        train, ev = _json(root / "metrics" / name / "train.json"), _json(root / "metrics" / name / "eval.json")
        if train is None and ev is None:
            continue
        csv = root / "plots" / name / "losses.csv"
        pics = sorted((root / "samples" / name / "sample").glob("*.png"))
        out.append(VariantResult(name, params.variant(name).source, train, ev, csv if csv.exists() else None, pics))
    return out


# --------------------------------------------------------------------------------------------------- formatting
def fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x) for x in v)
    if isinstance(v, bool) or isinstance(v, int) or isinstance(v, str):
        return str(v)
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def measured(s: Stated, results: dict[str, VariantResult], classifier: Optional[dict[str, Any]]) -> Any:
    """Our value of the quantity a source states (or, for a claim in words, our evidence as text)."""
    if s.subject.startswith("classifier."):
        return ((classifier or {}).get(s.subject.split(".", 1)[1]) or {}).get(s.quantity)
    if s.subject == "theory":
        if s.quantity == "nn_memorization":  # Appendix B's claim: our measurement on every variant that has one
            found = [f"{r.name} {fmt(r.values().get('nn_memorization'))}" for r in results.values()
                     if r.values().get("nn_memorization") is not None]
            return "; ".join(found) or None
        return theory_values()[s.quantity]
    if s.subject not in results:
        return None
    values = results[s.subject].values()
    if s.value is None:  # a claim: the numbers that test it
        keys = {"class_coverage": ("class_coverage", "class_kl"), "cgan_accuracy": ("cgan_accuracy",)}
        shown = [f"{k} {fmt(values.get(k))}" for k in keys.get(s.quantity, (s.quantity,)) if k in values]
        return "; ".join(shown) or None
    return values.get(s.quantity)


def theory_values() -> dict[str, float]:
    path = xy_game()
    ideal = ideal_losses()
    return {"ideal_bce": ideal["bce"], "ideal_mse": ideal["mse"],
            "xy_radius_growth": float(np.hypot(*path[-1]) / np.hypot(*path[0]))}


# --------------------------------------------------------------------------------------------------- sections
def results_table(results: list[VariantResult]) -> Block:
    rows = [[r.name] + [fmt(r.values().get(k)) for k, _ in COLUMNS] for r in results]
    return ("table", ["variant"] + [h for _, h in COLUMNS], rows)


def stated_table(results: dict[str, VariantResult], classifier: Optional[dict[str, Any]]) -> Block:
    rows = []
    for s in STATED:
        ours = measured(s, results, classifier)
        ran = s.subject in results or s.subject == "theory" or (classifier and s.subject.startswith("classifier"))
        diff = difference(ours, s.value) if not isinstance(ours, str) else None
        rows.append([s.subject, s.quantity, fmt(s.value) if s.value is not None else s.note,
                     fmt(ours) if ran else "not run", fmt(diff), f"{s.source}" + (f"; {s.note}" if s.value is not
                                                                                   None and s.note else "")])
    return ("table", ["subject", "quantity", "stated", "ours", "ours − stated", "source"], rows)


def classifier_section(classifier: Optional[dict[str, Any]]) -> list[Block]:
    blocks: list[Block] = [("h", 2, "The book's chapter-1 classifiers, and the evaluator")]
    if classifier is None:
        return blocks + [("p", "metrics/classifier.json is missing: stage train_classifier did not run, so the "
                                "MNIST metrics below could not be computed.")]
    stated = {s.subject.split(".", 1)[1]: s for s in STATED
              if s.subject.startswith("classifier.") and s.quantity == "test_accuracy"}
    rows = []
    for name, net in CLASSIFIERS.items():
        m = classifier.get(name) or {}
        book = stated[name].value
        rows.append([name, net, f"{m.get('loss')} / {m.get('optimizer')} lr {m.get('lr')}, batch "
                     f"{m.get('batch_size')}, {m.get('epochs')} epochs", fmt(m.get("test_accuracy")), fmt(book),
                     fmt(difference(m.get("test_accuracy"), book)), fmt(m.get("wall_time_s"))])
    acc = (classifier.get("cnn") or {}).get("test_accuracy") or 0.0
    note = (f"Trained on {classifier['n_train']:,} images, tested on {classifier['n_test']:,}. The book trains "
            f"every network at batch 1 for 3 epochs; ours follow params.yaml `classifier:` (recipes above). The "
            f"`cnn` is the evaluator of the MNIST GANs (its 250 penultimate features and its predicted digits); "
            f"its test accuracy {fmt(acc)} is " + ("at or above" if acc >= EVALUATOR_TARGET else "BELOW") +
            f" the {EVALUATOR_TARGET:.1%} target.")
    if classifier["n_train"] < 60_000:
        note += " This is not the 60,000-image MNIST training set, so the accuracies are not the book's setting."
    return blocks + [("table", ["network", "layers", "recipe", "test accuracy", "book", "Δ", "train s"], rows),
                     ("p", note)]


def theory_section(img_dir: Path) -> list[Block]:
    ideal = ideal_losses()
    path = xy_game()
    r0 = np.hypot(*path[0])
    closed = r0 * np.array([xy_radius_growth(XY_LR, n) for n in range(len(path))])
    fig = xy_game_figure(path, closed, img_dir / "xy_game.png", XY_LR)
    growth = np.hypot(*path[-1]) / r0
    return [("h", 2, "The book's appendices, computed"),
            ("table", ["loss", "book (Appendix A)", "our registry at D = 0.5"],
             [["BCE", fmt(math.log(2)), fmt(ideal["bce"])], ["MSE", "0.25", fmt(ideal["mse"])]]),
            ("p", f"Appendix D: simultaneous gradient play on x·y from {XY_START}, lr {XY_LR}, {XY_STEPS} steps. "
                  f"The radius grows ×{growth:.4f} (closed form (1+lr²)^(n/2) = ×{xy_radius_growth():.4f}; the book: "
                  f"≈ ×12): the players circle the equilibrium (0, 0) and spiral away from it."),
            ("img", f"img/{fig.name}", "Appendix D: x·y under simultaneous gradient steps")]


def picture_section(results: list[VariantResult], img_dir: Path) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Pictures")]
    for r in results:
        blocks.append(("h", 3, r.name))
        out = img_dir / r.name
        if r.losses_csv is not None:
            loss_curves(r.losses_csv, out / "losses.png", r.name)
            blocks.append(("img", f"img/{r.name}/losses.png", f"{r.name}: losses, and D(x) against D(G(z))"))
        for pic in r.pictures:
            _copy(pic, out / pic.name)
            blocks.append(("img", f"img/{r.name}/{pic.name}", f"{r.name}: {pic.stem}"))
        if r.losses_csv is None and not r.pictures:
            blocks.append(("p", "no pictures (stage sample did not run)"))
    return blocks


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def missing_text(params: Params, results: list[VariantResult]) -> str:
    have = {r.name for r in results}
    not_run = [v for v in params.variants if v not in have]
    absent = [v for v in CATALOG if v not in params.variants]
    unevaluated = [r.name for r in results if r.eval is None]
    parts = [f"Variants with metrics: {len(results)} ({', '.join(sorted(have)) or 'none'})."]
    if not_run:
        parts.append(f"Configured in params.yaml but without metrics (not run, or their data is missing): "
                     f"{', '.join(not_run)}.")
    if unevaluated:
        parts.append(f"Trained but not evaluated: {', '.join(unevaluated)}.")
    if absent:
        parts.append(f"Not in this params.yaml at all: {', '.join(absent)}.")
    return " ".join(parts)


def inception_notes(results: list[VariantResult]) -> list[Block]:
    """Why Inception FID is absent, variant by variant: never a made-up number."""
    notes = [f"{r.name}: {r.eval['fid_inception_reason']}" for r in results
             if r.eval and r.eval.get("fid_inception") is None and r.eval.get("fid_inception_reason")]
    return [("p", "Inception FID/KID was not computed for " + "; ".join(notes) + ".")] if notes else []


DEFINITIONS = (
    "How to read the table. `D real`, `D fake`, `G`: the loss terms averaged over the last `eval.final_fraction` of "
    "the logged rows; `ideal`: each D term (and G's loss) when D outputs 0.5 everywhere, the book's Appendix A "
    "equilibrium (bce ln 2, mse 0.25; none is defined for lsgan, wgan_gp, hinge). `FID/KID (MNIST clf)`: Fréchet "
    "distance and kernel inception distance of `eval.n_samples` samples against the MNIST test images, in the "
    "250-d feature space of the evaluator CNN — not comparable with Inception FIDs in papers. `precision`/`recall`: "
    "k-NN manifold estimates (Kynkäänniemi et al. 2019) in that space. `digits`: how many digits the evaluator "
    "reads in at least `eval.coverage_min_share` of the samples; `class KL`: KL divergence of the predicted digit "
    "histogram from uniform (0 balanced, ln 10 = 2.30 one digit only): the mode-collapse detectors. `cGAN acc.`: "
    "how often the evaluator reads the digit that was asked for. `NN memo.`: share of samples closer (in pixels) "
    "to their nearest training image than the median distance of a training image to its nearest other one; "
    "fresh draws from the data distribution score about 0.5, copies of training images 1. `1010 MAE`: mean "
    "absolute error of the generated pattern from 1, 0, 1, 0. `mean err`/`cov err`: distance of the generated "
    "mean and covariance from d2l's b and AᵀA. `FID pixels16`: Fréchet distance of 16×16 downsampled pixel vectors "
    "(CelebA, no Inception needed); `pixel mean Δ`: distance of the per-channel pixel means. `train s`, `images/s`, "
    "`peak GiB`: from training (peak memory is CUDA's max allocated on a GPU, the process's peak RSS on a CPU)."
)


# --------------------------------------------------------------------------------------------------- rendering
def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "table":
            cell: Callable[[str], str] = lambda s: str(s).replace("|", "\\|")  # noqa: E731
            out.append("\n".join(["| " + " | ".join(map(cell, b[1])) + " |", "|" + "---|" * len(b[1])] +
                                 ["| " + " | ".join(map(cell, row)) + " |" for row in b[2]]))
        else:
            out.append(f"![{b[2]}]({b[1]})")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[Block], title: str) -> str:
    e = html.escape
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
           "body{font-family:sans-serif;margin:2em;max-width:110em} table{border-collapse:collapse;font-size:85%}"
           "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right} td:first-child{text-align:left}"
           "img{max-width:100%;min-width:320px;image-rendering:pixelated;display:block;margin:.5em 0}"
           "figcaption{font-size:85%;color:#555}</style></head><body>"]
    for b in blocks:
        if b[0] == "h":
            out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            out.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        else:
            out.append(f"<figure><img src='{e(b[1])}' alt='{e(b[2])}'><figcaption>{e(b[2])}</figcaption></figure>")
    return "\n".join(out + ["</body></html>"]) + "\n"


def _write(path: Path, text: str) -> Path:
    return atomic_write(path, text)


# --------------------------------------------------------------------------------------------------- the stage
def mlflow_metrics(results: list[VariantResult], classifier: Optional[dict[str, Any]]) -> dict[str, float]:
    """The table as MLflow metrics `<variant>.<metric>`, plus the classifiers' accuracies and the theory demos."""
    out: dict[str, float] = {}
    for r in results:
        values = r.values()
        for key, _ in COLUMNS:
            v = values.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
                out[f"{r.name}.{key}"] = float(v)
    for name in CLASSIFIERS:
        acc = ((classifier or {}).get(name) or {}).get("test_accuracy")
        if acc is not None:
            out[f"classifier.{name}.test_accuracy"] = float(acc)
    out.update({f"theory.{k}": v for k, v in theory_values().items()})
    return out


def build_report(params: Params, root: Path, out_dir: Path) -> tuple[list[Path], dict[str, float]]:
    """Write out_dir/report.md, report.html and img/; return the files and the metrics to log."""
    results = collect(params, root)
    classifier = _json(root / "metrics" / "classifier.json")
    img = out_dir / "img"
    img.mkdir(parents=True, exist_ok=True)
    by_name = {r.name: r for r in results}
    blocks: list[Block] = [
        ("h", 1, "ganlab: evaluation and comparison report"), ("p", missing_text(params, results)),
        ("h", 2, "All variants"), results_table(results), ("p", DEFINITIONS), *inception_notes(results),
        ("h", 2, "What the sources state, beside our numbers"),
        ("p", "Timings and memory come from different hardware (the sources' CPUs and GPUs, ours in train.json: "
              "`device_name`); the CS231n losses are one student's last printed iteration, ours a mean over the "
              "end of the run. `d_loss_per_term` is the mean of D's two terms, the quantity the book and d2l plot."),
        stated_table(by_name, classifier),
        *classifier_section(classifier), *theory_section(img), *picture_section(results, img)]
    paths = [_write(out_dir / "report.md", to_markdown(blocks)),
             _write(out_dir / "report.html", to_html(blocks, "ganlab report"))]
    return paths, mlflow_metrics(results, classifier)
