"""What the report reads: each variant's outputs (train.json, eval.json, its loss log and pictures, found
through the run's paths), and how a number is written on the page."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

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


@dataclass
class VariantResult:
    name: str
    source: str
    train: Optional[dict[str, Any]]
    eval: Optional[dict[str, Any]]
    losses_csv: Optional[Path]
    pictures: list[Path] = field(default_factory=list)
    progress: list[Path] = field(default_factory=list)

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
        csv = run.losses_csv
        pics = sorted(run.pictures.glob("*.png"))
        progress = sorted(run.progress.glob("epoch_*.png"))
        out.append(VariantResult(name, params.variant(name).source, train, ev, csv if csv.exists() else None, pics,
                                 progress))
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
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None and math.isfinite(v)
