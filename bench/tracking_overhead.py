"""What MLflow tracking costs: the same training with the no-op tracker and with MlflowTracker (a fresh SQLite store).

    python bench/tracking_overhead.py [--variant mnist_mlp] [--steps 3000] [--repeats 3]

Needs data/processed/mnist.h5. Prints the median wall time of each and the overhead in percent, and writes
bench/results/tracking_overhead-<host>.json. The worst case is the book's batch-1 variants: a row every 10 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from ganlab.config import TrackingCfg, load_params
from ganlab.engine.contract import RunPaths, Tracker
from ganlab.engine.train import fit
from ganlab.tracking.tracker import MlflowTracker

ROOT = Path(__file__).resolve().parents[1]


def timed(variant: str, steps: int, tracked: bool) -> float:
    """Wall time of one training run; tracked runs share one store (made by the warm-up), as in a pipeline."""
    params = load_params(ROOT / "params.yaml")
    cfg = params.variant(variant)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": steps, "device": "cpu"})})
    with tempfile.TemporaryDirectory() as out:
        tracker = MlflowTracker(variant, TrackingCfg(), stage="bench") if tracked else Tracker()
        t0 = time.perf_counter()
        fit(cfg, variant, RunPaths.for_variant(variant, Path(out), ROOT / "data/processed"), tracker)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="mnist_mlp")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    store = tempfile.TemporaryDirectory()
    os.environ["DVC_ROOT"] = store.name  # the store: <tmp>/mlruns/mlflow.db
    timed(args.variant, 50, True)  # warm-up: imports, and the store's schema
    plain = statistics.median(timed(args.variant, args.steps, False) for _ in range(args.repeats))
    tracked = statistics.median(timed(args.variant, args.steps, True) for _ in range(args.repeats))
    overhead = 100 * (tracked - plain) / plain
    print(f"{args.variant}, {args.steps} steps: untracked {plain:.2f} s, tracked {tracked:.2f} s, "
          f"overhead {overhead:+.1f} %")
    out = ROOT / "bench/results" / f"tracking_overhead-{platform.node() or 'cpu'}.json"
    out.write_text(json.dumps({"variant": args.variant, "steps": args.steps, "untracked_s": plain,
                               "tracked_s": tracked, "overhead_percent": overhead}, indent=2) + "\n")


if __name__ == "__main__":
    main()
