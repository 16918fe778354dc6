"""The claims ledger: each result a source states (report.sources), our measured value of it, and the verdict
with the context that decides whether our run is like the source's (device, batch size, schedule, data)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ganlab.config import Params
from ganlab.report.results import VariantResult, _scalar, fmt
from ganlab.report.sources import HOLDS, MIN_TIMED_IMAGES, MISSING, STATED, STUDY_FILES, Stated, Verdict, judge
from ganlab.report.theory import ideal_losses, xy_game

NOT_RECIPE = {"device", "log_every", "checkpoint_every", "grid_size", "tf32", "cudnn_benchmark", "fused",
              "compile", "cuda_graph", "channels_last"}


SOURCE_DATA = {"mnist": ("mnist", "train_rows", 60_000), "celeba": ("celeba", "n_images", 20_000),
               "celeba_full": ("celeba", "n_images", 20_000)}  # dataset -> params data key, the sources' size


def _device_kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else device


def recipe_overrides(raw: dict[str, Any]) -> dict[str, Any]:
    """The global overrides set in params.yaml (model.*, train.*), as `section.key: value`: the header's list.
    Which of them apply to a variant is the config's rule (`Params.overrides`)."""
    return {f"{section}.{k}": v for section in ("model", "train") for k, v in (raw.get(section) or {}).items()
            if v is not None}


def run_context(params: Params, r: VariantResult) -> dict[str, Any]:
    """What a source's claim needs to know about our run to say whether it is like the source's: the device kind,
    batch size, training-set size, and whether ours trained the source's whole schedule with its recipe and data
    (`full_run`, explained in words by `schedule`)."""
    if r.train is None:
        return {}
    t = r.train
    own_epochs = ((params.variants[r.name].get("train") or {}).get("epochs")) or params.variant(r.name).train.epochs
    ctx: dict[str, Any] = {"device": _device_kind(t["device"]), "batch_size": t["batch_size"],
                           "n_train": t["n_train"], "epochs": t["epochs_done"]}
    why = []
    if t["epochs_done"] < own_epochs:
        why.append(f"trained {fmt(t['steps'])} steps = {t['epochs_done']:.3g} of the source's {own_epochs} "
                   f"epoch{'s' if own_epochs != 1 else ''}")
    changed = [o.key for o in params.overrides(r.name)
               if o.key.split(".", 1)[1] not in NOT_RECIPE and o.key != "train.max_steps"]
    if changed:
        why.append("changed the recipe (" + ", ".join(changed) + ")")
    dataset = params.variant(r.name).data.dataset
    if dataset in SOURCE_DATA:
        section, key, size = SOURCE_DATA[dataset]
        have = getattr(getattr(params.data, section), key)
        if have < size:
            why.append(f"had {fmt(have)} of the full {fmt(size)} {dataset} images (data.{section}.{key})")
    ctx["full_run"] = not why
    ctx["schedule"] = "; ".join(why) if why else "trained the source's whole schedule"
    ctx["full_run_why"] = f"the claim is about the end of the source's schedule; ours {ctx['schedule']}"
    return {**ctx, **timed(t["images_seen"])}


def timed(images: int) -> dict[str, Any]:
    return {"long_enough": images >= MIN_TIMED_IMAGES,
            "long_enough_why": f"ours timed {fmt(images)} images only, under the {fmt(MIN_TIMED_IMAGES)} it takes for "
                               f"start-up costs not to dominate"}


def classifier_context(params: Params, classifier: Optional[dict[str, Any]], name: str) -> dict[str, Any]:
    m = (classifier or {}).get(name)
    if not m:
        return {}
    n = classifier["n_train"]  # type: ignore[index]
    return {"device": _device_kind(params.classifier.device), "batch_size": m["batch_size"], "n_train": n,
            "epochs": m["epochs"], "full_run": True, **timed(m["epochs"] * n)}


def theory_values() -> dict[str, float]:
    path = xy_game()
    ideal = ideal_losses()
    return {"ideal_bce": ideal["bce"], "ideal_mse": ideal["mse"],
            "xy_radius_growth": float(np.hypot(*path[-1]) / np.hypot(*path[0]))}


def study(subject: str, root: Path) -> tuple[Optional[dict[str, float]], dict[str, Any]]:
    """A committed study's measurement of a claim and its context: for `study.losses`, per loss 1.0 when the study
    judged it better than bce on FID (0.0 otherwise), and `judged` false (said why) while an arm has fewer than two
    seeds. (None, {}) when the repository holds no such study."""
    path = root / STUDY_FILES[subject]
    if not path.exists():
        return None, {}
    rows = [r for r in json.loads(path.read_text()) if r["metric"] == "fid_mnist" and r["b"] == "bce"]
    unjudged = [f"{r['a']} {r['n_a']} and bce {r['n_b']}" for r in rows if r["verdict"].startswith("cannot judge")]
    ours = {r["a"]: float(r["verdict"] == "a better") for r in rows}
    ctx: dict[str, Any] = {"judged": bool(rows) and not unjudged}
    if not ctx["judged"]:
        ctx["judged_why"] = f"the study has too few seeds to judge ({', '.join(unjudged) or 'no rows'} seeds)"
    return ours, ctx


def measured(s: Stated, results: dict[str, VariantResult], classifier: Optional[dict[str, Any]]) -> Any:
    """Our value of the quantity a source states; for a claim about every variant, one value per variant (a
    study's claim: `study`)."""
    if s.subject.startswith("classifier."):
        m = (classifier or {}).get(s.subject.split(".", 1)[1]) or {}
        if s.quantity == "seconds_per_image" and m:
            return m["wall_time_s"] / (m["epochs"] * classifier["n_train"])  # type: ignore[index]
        return m.get(s.quantity)
    if s.subject == "theory":
        if s.quantity in theory_values():
            return theory_values()[s.quantity]
        return {r.name: r.values()[s.quantity] for r in results.values() if _scalar(r.values().get(s.quantity))}
    if s.subject not in results:
        return None
    v = results[s.subject].values().get(s.quantity)
    return tuple(v) if isinstance(v, list) else v


@dataclass
class Claim:
    stated: Stated
    ours: Any
    verdict: Verdict
    ran: bool  # the subject has metrics here

    @property
    def says(self) -> str:
        s = self.stated
        if s.value is None:
            return s.note
        value = fmt(s.value) + (" s" if s.quantity == "seconds_per_image" else "")
        return value + (f" ({s.note})" if s.note else "")

    @property
    def measured(self) -> str:
        if not self.ran:
            return "not run"
        return fmt(self.ours) + (" s" if self.stated.quantity == "seconds_per_image" and self.ours else "")

    @property
    def outcome_class(self) -> str:
        return self.verdict.outcome.replace(" ", "-")


def claims(params: Params, results: dict[str, VariantResult], classifier: Optional[dict[str, Any]],
           root: Path = Path(".")) -> list[Claim]:
    out = []
    for s in STATED:
        missing = "not run here"
        if s.subject in STUDY_FILES:
            (ours, ctx), missing = study(s.subject, root), f"{STUDY_FILES[s.subject]} is not in this repository"
            ran = ours is not None
        else:
            ours = measured(s, results, classifier)
            if s.subject.startswith("classifier."):
                ctx = classifier_context(params, classifier, s.subject.split(".", 1)[1])
                ran = classifier is not None
            elif s.subject == "theory":
                ctx, ran = {}, True
            else:
                ran = s.subject in results
                ctx = run_context(params, results[s.subject]) if ran else {}
        verdict = judge(s, ours, ctx) if ran else Verdict(MISSING, missing)
        if ran and s.subject in results and results[s.subject].seeds:
            verdict = per_seed(params, s, results[s.subject], classifier)
        out.append(Claim(s, ours, verdict, ran))
    return out


def per_seed(params: Params, s: Stated, r: VariantResult, classifier: Optional[dict[str, Any]]) -> Verdict:
    """A multi-seed variant's claim, judged on each seed: "holds in k of n seeds" (a failed seed counts in n).
    The outcome is the seeds' most common one (holds on a tie: the claim is seen to hold)."""
    verdicts = [judge(s, measured(s, {r.name: one}, classifier), run_context(params, one))
                for one in r.seeds.values()]
    n = len(verdicts) + len(r.failed)
    k = sum(v.outcome == HOLDS for v in verdicts)
    counts = {o: sum(v.outcome == o for v in verdicts) for o in {v.outcome for v in verdicts}}
    outcome = max(counts, key=lambda o: (counts[o], o == HOLDS))
    failed = f"; {len(r.failed)} failed to train" if r.failed else ""
    return Verdict(outcome, f"holds in {k} of {n} seeds{failed}; seed {next(iter(r.seeds))}: {verdicts[0].text}")


def tally(cs: list[Claim]) -> str:
    """'1 holds, 2 not comparable' for a variant's claims."""
    counts: dict[str, int] = {}
    for c in cs:
        counts[c.verdict.outcome] = counts.get(c.verdict.outcome, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "no source claim"
