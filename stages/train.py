"""Stage train@<variant>: train one variant, write its models, metrics, loss log and per-epoch grids, and track
the run in MLflow. With `train.nproc > 1` it re-runs itself under torchrun in that many processes
(ganlab.engine.distributed); rank 0 tracks and writes. With `train.seeds > 1` it trains each seed in turn, in
its own folders and MLflow run (nested under one group run), and metrics/<variant>/train.json lists them all;
it fails only when every seed failed."""

import argparse
import json
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.engine import distributed, interrupt
from ganlab.engine.contract import RunPaths, Tracker, TrainingDiverged
from ganlab.engine.train import fit, fit_seeds
from ganlab.io import BadFile, atomic_write
from ganlab.tracking.tracker import MlflowTracker


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("variant")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data-dir", type=Path, default=Path("data/processed"))
    ap.add_argument("--root", type=Path, default=Path("."), help="where models/ metrics/ plots/ samples/ go")
    args = ap.parse_args()
    try:
        params = load_params(args.params)
        cfg = params.variant(args.variant)
        distributed.check(cfg, args.variant)
        if not distributed.under_torchrun():  # the parent (or the only process) warns, not every rank
            if warning := params.masking_line([args.variant]):
                print(f"train@{args.variant}: warning: {warning}", file=sys.stderr)
        if cfg.train.nproc > 1 and not distributed.under_torchrun():
            return distributed.launch(cfg.train.nproc, sys.argv)
        # Ctrl-C, or SIGTERM from `dvc queue kill`: stop after the step, with a checkpoint there
        interrupt.install(graceful=not distributed.under_torchrun())
        overrides = {o.key: o.value for o in params.overrides(args.variant)}
        tracker = (MlflowTracker(args.variant, params.tracking, stage=f"train@{args.variant}", overrides=overrides)
                   if distributed.is_writer() else Tracker())
        par = distributed.setup(cfg)  # None for one process; else this rank of train.nproc
        if cfg.train.seeds > 1:
            return train_seeds(args, params, cfg, overrides, par)
        metrics = fit(cfg, args.variant, RunPaths.for_variant(args.variant, args.root, args.data_dir), tracker,
                      overrides, par)
    except interrupt.Stopped as stop:  # one line, no traceback: where it stopped and how to go on
        print(f"train@{args.variant}: {stop} (checkpoint {stop.checkpoint}); to resume, run: "
              f"{interrupt.resume_hint(args.variant)}", file=sys.stderr)
        return 130
    except (ConfigError, TrainingDiverged, FileNotFoundError, BadFile) as err:
        print(f"train@{args.variant}: error: {err}", file=sys.stderr)
        return 1
    finally:
        distributed.teardown()
    if not distributed.is_writer():
        return 0
    print(f"train@{args.variant}: {metrics['steps']} steps, D {metrics['d_loss']:.4f}, G {metrics['g_loss']:.4f}, "
          f"{metrics['images_per_s']:.0f} images/s; MLflow run {metrics['run_id']}", file=sys.stderr)
    return 0


def train_seeds(args: argparse.Namespace, params, cfg, overrides: dict, par) -> int:
    """Every seed of the variant (fit_seeds), then metrics/<variant>/train.json: {seeds, per_seed, failed, ...}."""
    name, run = args.variant, RunPaths.for_variant(args.variant, args.root, args.data_dir)
    runs, writer = run.seed_runs(cfg), distributed.is_writer()
    group = MlflowTracker(name, params.tracking, stage=f"train@{name}", overrides=overrides) if writer else None
    parent = group.open_seed_group(cfg, list(runs)) if group else None

    def tracker(seed: int) -> Tracker:
        return (MlflowTracker(name, params.tracking, stage=f"train@{name}", overrides=overrides, parent=parent)
                if writer else Tracker())

    try:
        results = fit_seeds(cfg, name, list(runs), runs.__getitem__, tracker, overrides, par)
    except BaseException as exc:
        if group:
            group.end_seed_group(parent, 0, 0, "KILLED" if isinstance(exc, (KeyboardInterrupt, interrupt.Stopped))
                                 else "FAILED")
        raise
    failed = {s: r["error"] for s, r in results.items() if r["status"] != "ok"}
    if not writer:
        return 0
    doc = {"variant": name, "seeds": list(results), "n_seeds": len(results), "n_failed": len(failed),
           "failed": {str(s): e for s, e in failed.items()}, "run_id": parent,
           "per_seed": {str(s): r for s, r in results.items()}}
    atomic_write(run.train_json, json.dumps(doc, indent=2) + "\n")
    group.end_seed_group(parent, len(results) - len(failed), len(failed),
                         "FAILED" if len(failed) == len(results) else "FINISHED")
    for s, err in failed.items():
        print(f"train@{name}: seed {s} FAILED ({err}); it counts as failed in evaluate@ and the report",
              file=sys.stderr)
    if len(failed) == len(results):
        print(f"train@{name}: error: every seed failed ({', '.join(map(str, failed))})", file=sys.stderr)
        return 1
    print(f"train@{name}: {len(results) - len(failed)} of {len(results)} seeds trained; MLflow group run {parent}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
