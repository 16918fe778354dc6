"""What the report reads: each variant's outputs (train.json, eval.json, its loss log and pictures, found
through the run's paths), and how a number is written on the page."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ganlab.config import Params
from ganlab.engine.contract import RunPaths
from ganlab.engine.losses import LOSSES
from ganlab.io import bad_file, read_json


def _json(path: Path) -> Optional[dict[str, Any]]:
    return read_json(path) if path.exists() else None


def _run_json(path: Path) -> Optional[dict[str, Any]]:
    """train.json or eval.json, with every value that becomes part of a file name checked against what the
    pipeline writes there: the report names a chart `losses_<loss>.png`, so a planted `x/../../evil` must not pass."""
    value = _json(path)
    if value is not None and "loss" in value and not (isinstance(value["loss"], str) and value["loss"] in LOSSES):
        raise bad_file(path, f"refused: its loss {str(value['loss'])[:80]!r} is none of the pipeline's "
                       f"({', '.join(LOSSES)})")
    return value
class Spread(float):
    """A number measured over several seeds: the mean, carrying the seeds' standard deviation and count, so every
    place the report writes it (fmt) shows the spread beside it, and every place that computes with it gets the
    mean."""

    sd: float
    n: int

    def __new__(cls, values: list[float]) -> "Spread":
        v = np.asarray(values, dtype=float)
        out = super().__new__(cls, float(v.mean()))
        out.sd, out.n = float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)
        return out


@dataclass
class VariantResult:
    name: str
    source: str
    train: Optional[dict[str, Any]]
    eval: Optional[dict[str, Any]]
    losses_csv: Optional[Path]
    pictures: list[Path] = field(default_factory=list)
    progress: list[Path] = field(default_factory=list)
    seeds: dict[int, "VariantResult"] = field(default_factory=dict)  # a multi-seed run: each seed that trained
    failed: dict[str, str] = field(default_factory=dict)  # ... and each that failed, with its error

    def values(self) -> dict[str, Any]:
        """train.json, then eval.json over it (its final losses are means over the run's end, not the last row),
        and the derived quantities the sources state."""
        v: dict[str, Any] = {"source": self.source, **(self.train or {}), **(self.eval or {})}
        if self.train:
            v["peak_memory_gib"] = self.train["peak_memory_bytes"] / 2 ** 30
            v["seconds_per_image"] = self.train["wall_time_s"] / max(self.train["images_seen"], 1)
        return v


def collect(params: Params, root: Path) -> list[VariantResult]:
    """Every configured variant that left metrics, in params.yaml's order."""
    out = []
    for name in params.variants:
        run = RunPaths.for_variant(name, root)
        train, ev = _run_json(run.train_json), _run_json(run.eval_json)
        if train is None and ev is None:
            continue
        source = params.variant(name).source
        if train and "per_seed" in train:
            out.append(_over_seeds(name, source, run, train, ev))
            continue
        out.append(_one(name, source, run, train, ev))
    return out


def _one(name: str, source: str, run: RunPaths, train: Optional[dict], ev: Optional[dict]) -> VariantResult:
    csv = run.losses_csv
    return VariantResult(name, source, train, ev, csv if csv.exists() else None, sorted(run.pictures.glob("*.png")),
                         sorted(run.progress.glob("epoch_*.png")))


def _over_seeds(name: str, source: str, run: RunPaths, train: dict, ev: Optional[dict]) -> VariantResult:
    """A multi-seed variant: one result per seed that trained, and the variant's numbers as `Spread`s over them
    (the first seed's loss log, pictures and text values stand for the rest)."""
    seeds = {int(s): _one(name, source, run.for_seed(int(s)), t, ((ev or {}).get("per_seed") or {}).get(s))
             for s, t in train["per_seed"].items() if t["status"] == "ok"}
    if not seeds:
        return VariantResult(name, source, None, None, None, failed=train["failed"])
    first = next(iter(seeds.values()))
    merged = [_merge([r.train for r in seeds.values()])] + [_merge([r.eval for r in seeds.values()])
                                                            if all(r.eval for r in seeds.values()) else None]
    return VariantResult(name, source, merged[0], merged[1], first.losses_csv, sorted(run.pictures.glob("*.png")),
                         first.progress, seeds, train["failed"])


def _merge(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers as their Spread over the seeds; anything else as the first seed has it."""
    out = dict(docs[0])
    for k, v in docs[0].items():
        vals = [d.get(k) for d in docs]
        if all(isinstance(x, float) and math.isfinite(x) for x in vals):  # counts (steps, ...) stay the first's
            out[k] = Spread(vals)
    return out


def fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, dict):
        return "; ".join(f"{k} {fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    if isinstance(v, bool) or isinstance(v, int) or isinstance(v, str):
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10_000 else str(v)
    mean = f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, Spread) and v.n > 1:
        return f"{mean} ± {fmt(v.sd)} (sd, {v.n} seeds)"
    return mean


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None and math.isfinite(v)
