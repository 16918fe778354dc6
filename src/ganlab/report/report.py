"""Stage report: every variant's numbers, charts and pictures, each source claim with our verdict on it ->
reports/report.{html,md}.

It reads what the other stages left under the repository root: metrics/<v>/{train,eval}.json,
metrics/classifier.json, plots/<v>/losses.csv and samples/<v>/{sample,progress}/*.png. A variant without metrics
is listed as missing, never an error, so the report builds from any subset of variants (a tiny pipeline, a machine
without CelebA). Pictures and charts go to reports/img/, so both files open from the file system.

This module computes everything (numbers, verdicts, charts) into one context; the Jinja2 templates in
ganlab/report/templates/ only lay it out, the HTML page and the Markdown text from the same context. Every scalar of
train.json and eval.json appears in a variant's details, so a new metric needs no template change.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from ganlab.config import Params, flatten
from ganlab.engine.losses import LOSSES
from ganlab.figures import bar_chart, loss_overlay, xy_game_figure
from ganlab.io import atomic_write, read_png
from ganlab.report.claims import Claim, claims, recipe_overrides, run_context, tally, theory_values
from ganlab.report.results import VariantResult, _json, _scalar, collect, fmt
from ganlab.report.sources import CATALOG, HOLDS, MISSING, UNLIKE
from ganlab.report.theory import XY_LR, XY_START, XY_STEPS, ideal_losses, xy_game, xy_radius_growth

CLASSIFIERS = {  # metrics/classifier.json entry -> the book's network (variants.md A1)
    "mlp": "nb 03: Linear(784,200), Sigmoid, Linear(200,10), Sigmoid",
    "mlp_refined": "nb 04: Linear(784,200), LeakyReLU(0.02), LayerNorm, Linear(200,10), Sigmoid",
    "cnn": "nb 13: Conv(1,10,5,2), LReLU, BN, Conv(10,10,3,2), LReLU, BN, Linear(250,10), Sigmoid",
}
EVALUATOR_TARGET = 0.985
# The bar chart: each distance that some variant has, against its real-data reference `<key>_real` when measured.
CHART_METRICS = {"fid_mnist": "FID, MNIST evaluator features", "kid_mnist": "KID, MNIST evaluator features",
                 "fid_pixels16": "FID, 16×16 pixels (CelebA)", "fid_inception": "FID, Inception (CelebA)",
                 "fid_gaussian": "Fréchet distance (2-D Gaussian)"}
FID_KEYS = ("fid_mnist", "fid_pixels16", "fid_gaussian")  # the headline's FID: the variant's own kind
# Global overrides that change how fast or where a run goes, not what it computes: a run with only these set
# still follows its source's recipe.
TEMPLATES = Path(__file__).parent / "templates"


# --------------------------------------------------------------------------------------------------- header
def _git(root: Path, *args: str) -> Optional[str]:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def header(root: Path, params_file: Path, raw: dict[str, Any], results: list[VariantResult]) -> dict[str, Any]:
    """What was run: commit, date, machine, the params that differ from the committed params.yaml (what
    `dvc exp run -S` set), and the global overrides in force."""
    commit = (_git(root, "rev-parse", "HEAD") or "").strip() or None
    dirty = bool((_git(root, "status", "--porcelain", "--untracked-files=no") or "").strip())
    committed = _git(root, "show", f"HEAD:./{os.path.relpath(params_file.resolve(), root.resolve())}")
    changed: Optional[list[tuple[str, str, str]]] = None
    if committed is not None:
        before, now = flatten(yaml.safe_load(committed) or {}), flatten(raw)
        changed = [(k, fmt(before.get(k)), fmt(now.get(k))) for k in sorted(set(before) | set(now))
                   if before.get(k) != now.get(k)]
    devices = sorted({r.train["device_name"] for r in results if r.train})
    return {"commit": commit, "dirty": dirty, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{socket.gethostname()} ({platform.system()} {platform.machine()}, {os.cpu_count()} CPUs)",
            "devices": ", ".join(devices) or "—", "dvc_exp_name": os.environ.get("DVC_EXP_NAME"),
            "changed": changed, "overrides": [(k, fmt(v)) for k, v in recipe_overrides(raw).items()]}


# --------------------------------------------------------------------------------------------------- figures
# A picture of the pipeline (a 64-image grid of 64x64 RGB) is well under 1 MB; the cap only stops a planted
# file from sending gigabytes to the tracking server with the report.
MAX_PICTURE_BYTES = 32 << 20


def _copy(src: Path, dst: Path, root: Path, variant: str) -> Path:
    """A picture of `variant` into the report, refused by name when it is not the pipeline's own (io.read_png)."""
    return atomic_write(dst, read_png(src, root, MAX_PICTURE_BYTES, f"dvc repro -f sample@{variant}"))


def charts(results: list[VariantResult], img: Path) -> list[dict[str, str]]:
    """The bar chart of every distance across variants (with the real-data reference), and one overlay of the
    loss curves per loss function (losses of one kind share a scale), x in epochs as trained."""
    out = []
    panels = {}
    for key, title in CHART_METRICS.items():
        bars = [(r.name, r.values()[key], r.values().get(key + "_real")) for r in results
                if _scalar(r.values().get(key))]
        if bars:
            panels[title] = bars
    if panels:
        bar_chart(panels, img / "distances.png")
        out.append({"src": "img/distances.png", "caption": "Distances of the samples from the real data, lower "
                    "is better; a black tick marks real training images scored the same way (the floor)",
                    "kind": "bars"})
    families: dict[str, list[VariantResult]] = {}
    for r in results:
        if r.losses_csv is not None and r.train:
            families.setdefault(r.values().get("loss") or "unknown", []).append(r)
    for loss, rs in families.items():
        curves = {r.name: (r.losses_csv, r.train["steps_per_epoch"]) for r in rs}  # type: ignore[index]
        loss_overlay(curves, img / f"losses_{loss}.png", f"{loss} loss", LOSSES[loss].ideal if loss in LOSSES
                     else None)
        out.append({"src": f"img/losses_{loss}.png", "caption": f"Loss curves of the {loss} variants, overlaid "
                    "(x: epochs as trained)", "kind": "curves"})
    return out


def pictures(results: list[VariantResult], img: Path, root: Path) -> dict[str, list[dict[str, str]]]:
    """Each variant's pictures copied into img/<variant>/; the first is its sample grid (or the last
    training grid when stage sample did not run)."""
    out: dict[str, list[dict[str, str]]] = {}
    for r in results:
        pics = sorted(r.pictures, key=lambda p: p.name != "grid.png") or r.progress[-1:]
        out[r.name] = [{"src": f"img/{r.name}/{p.name}", "caption": f"{r.name}: {p.stem.replace('_', ' ')}"}
                       for p in pics if _copy(p, img / r.name / p.name, root, r.name)]
    return out


def theory(img: Path) -> dict[str, Any]:
    ideal = ideal_losses()
    path = xy_game()
    r0 = np.hypot(*path[0])
    closed = r0 * np.array([xy_radius_growth(XY_LR, n) for n in range(len(path))])
    fig = xy_game_figure(path, closed, img / "xy_game.png", XY_LR)
    return {"ideal": [("BCE", fmt(math.log(2)), fmt(ideal["bce"])), ("MSE", "0.25", fmt(ideal["mse"]))],
            "text": f"Appendix D: simultaneous gradient play on x·y from {XY_START}, lr {XY_LR}, {XY_STEPS} steps. "
                    f"The radius grows ×{np.hypot(*path[-1]) / r0:.4f} (closed form (1+lr²)^(n/2) = "
                    f"×{xy_radius_growth():.4f}; the book: ≈ ×12): the players circle the equilibrium (0, 0) and "
                    f"spiral away from it.",
            "figure": {"src": f"img/{fig.name}", "caption": "Appendix D: x·y under simultaneous gradient steps"}}


def ideal_text() -> str:
    """The ideal losses as the registry defines them, so the words and the numbers cannot disagree."""
    have = [f"{k} {fmt(v.ideal)}" for k, v in LOSSES.items() if v.ideal is not None]
    none = [k for k, v in LOSSES.items() if v.ideal is None]
    return ", ".join(have) + (f"; none is defined for {' and '.join(none)}" if none else "")


# --------------------------------------------------------------------------------------------------- tables
HEADLINE = ("variant", "source", "loss", "steps", "epochs", "images", "FID", "KID", "digits", "ms/image",
            "source claims")


def headline_row(r: VariantResult, cs: list[Claim]) -> list[str]:
    v = r.values()
    fid = next((v[k] for k in FID_KEYS if _scalar(v.get(k))), None)
    return [r.name, r.source, fmt(v.get("loss")), fmt(v.get("steps")), fmt(v.get("epochs_done")),
            fmt(v.get("images_seen")), fmt(fid), fmt(v.get("kid_mnist")), fmt(v.get("class_coverage")),
            fmt(v["seconds_per_image"] * 1000) if "seconds_per_image" in v else "—", tally(cs)]


def details(r: VariantResult) -> list[tuple[str, str]]:
    """Every number of the variant's train.json and eval.json, in their order; the effective config (a nested
    mapping, train.json's `config`) is left to MLflow's params and the header."""
    rows = []
    for k, v in r.values().items():
        if isinstance(v, dict) and any(isinstance(x, dict) for x in v.values()):
            continue
        if isinstance(v, list) and v and isinstance(v[0], list):
            v = f"{len(v)}×{len(v[0])} matrix: " + fmt(v)
        rows.append((k, fmt(v)))
    return rows


def classifier_rows(classifier: Optional[dict[str, Any]], cs: list[Claim]) -> list[list[str]]:
    book = {c.stated.subject.split(".", 1)[1]: c for c in cs
            if c.stated.subject.startswith("classifier.") and c.stated.quantity == "test_accuracy"}
    rows = []
    for name, net in CLASSIFIERS.items():
        m = (classifier or {}).get(name) or {}
        rows.append([name, net, f"{m.get('loss')} / {m.get('optimizer')} lr {m.get('lr')}, batch "
                     f"{m.get('batch_size')}, {m.get('epochs')} epochs", fmt(m.get("test_accuracy")),
                     fmt(book[name].stated.value), book[name].verdict.outcome, fmt(m.get("wall_time_s"))])
    return rows


def classifier_note(classifier: dict[str, Any]) -> str:
    acc = (classifier.get("cnn") or {}).get("test_accuracy") or 0.0
    note = (f"Trained on {classifier['n_train']:,} images, tested on {classifier['n_test']:,}. The book trains "
            f"every network at batch 1 for 3 epochs; ours follow params.yaml's classifier section (recipes above). "
            f"The cnn is the evaluator of the MNIST GANs (its 250 penultimate features and its predicted digits); "
            f"its test accuracy {fmt(acc)} is " + ("at or above" if acc >= EVALUATOR_TARGET else "BELOW") +
            f" the {EVALUATOR_TARGET:.1%} target.")
    if classifier["n_train"] < 60_000:
        note += " This is not the 60,000-image MNIST training set, so the accuracies are not the book's setting."
    return note


def missing(params: Params, results: list[VariantResult]) -> dict[str, list[str]]:
    have = {r.name for r in results}
    return {"ran": [r.name for r in results], "not_run": [v for v in params.variants if v not in have],
            "unevaluated": [r.name for r in results if r.eval is None],
            "absent": [v for v in CATALOG if v not in params.variants]}


def inception_notes(results: list[VariantResult]) -> list[str]:
    """Why Inception FID is absent, variant by variant: never a made-up number."""
    return [f"{r.name}: {r.eval['fid_inception_reason']}" for r in results
            if r.eval and r.eval.get("fid_inception") is None and r.eval.get("fid_inception_reason")]


def time_note(results: list[VariantResult]) -> str:
    kinds = sorted({r.train["device_name"] for r in results if r.train})
    return ("Times are compared per image trained on, never per run: a source's time for its whole run is divided "
            "by the images that run saw, ours by the images ours saw (so a run cut short by train.max_steps still "
            "compares). They are compared only where like meets like: the same kind of device and the same batch "
            f"size; other hardware of that kind counts as like within a factor of 3. Ours ran on: "
            f"{', '.join(kinds) or 'nothing yet'}.")


# --------------------------------------------------------------------------------------------------- the stage
def mlflow_metrics(results: list[VariantResult], classifier: Optional[dict[str, Any]],
                   cs: list[Claim]) -> dict[str, float]:
    """Every number as MLflow metrics `<variant>.<metric>`, plus the classifiers' accuracies, the theory demos and
    the count of claims per verdict (`claims.holds`)."""
    out: dict[str, float] = {}
    for r in results:
        for key, v in r.values().items():
            if _scalar(v):
                out[f"{r.name}.{key}"] = float(v)
    for name in CLASSIFIERS:
        acc = ((classifier or {}).get(name) or {}).get("test_accuracy")
        if acc is not None:
            out[f"classifier.{name}.test_accuracy"] = float(acc)
    out.update({f"theory.{k}": v for k, v in theory_values().items()})
    for c in cs:
        key = "claims." + c.verdict.outcome.replace(" ", "_")
        out[key] = out.get(key, 0.0) + 1
    return out


def render(context: dict[str, Any]) -> tuple[str, str]:
    """(report.html, report.md) from the templates."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html.j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["cell"] = lambda s: " ".join(str(s).split()).replace("|", "\\|")  # one Markdown table cell
    env.filters["fmt"] = fmt
    return (env.get_template("report.html.j2").render(**context),
            env.get_template("report.md.j2").render(**context))


def build_report(params: Params, root: Path, out_dir: Path,
                 params_file: Optional[Path] = None) -> tuple[list[Path], dict[str, float]]:
    """Write out_dir/report.html, report.md and img/; return the files and the metrics to log."""
    params_file = params_file or root / "params.yaml"
    raw = yaml.safe_load(params_file.read_text())
    results = collect(params, root)
    by_name = {r.name: r for r in results}
    classifier = _json(root / "metrics" / "classifier.json")
    img = out_dir / "img"
    img.mkdir(parents=True, exist_ok=True)
    cs = claims(params, by_name, classifier, root)
    per_variant = {r.name: [c for c in cs if c.stated.subject == r.name] for r in results}
    context = {
        "title": "ganlab: the GAN curriculum, trained and compared",
        "header": header(root, params_file, raw, results), "missing": missing(params, results),
        "headline": {"columns": HEADLINE, "rows": [headline_row(r, per_variant[r.name]) for r in results]},
        "variants": [{"name": r.name, "source": r.source, "details": details(r), "claims": per_variant[r.name],
                      "context": run_context(params, r), "evaluated": r.eval is not None} for r in results],
        "charts": charts(results, img), "pictures": pictures(results, img, root), "claims": cs,
        "outcomes": {"holds": HOLDS, "unlike": UNLIKE, "missing": MISSING}, "ideal_text": ideal_text(),
        "time_note": time_note(results), "inception_notes": inception_notes(results),
        "classifier": classifier, "classifier_rows": classifier_rows(classifier, cs),
        "classifier_note": classifier_note(classifier) if classifier else None, "theory": theory(img),
        "eval": params.eval,
    }
    html_text, md_text = render(context)
    paths = [_write(out_dir / "report.html", html_text), _write(out_dir / "report.md", md_text)]
    return paths, mlflow_metrics(results, classifier, cs)


def _write(path: Path, text: str) -> Path:
    return atomic_write(path, text)
