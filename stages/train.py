"""Stage train@<variant>: train one variant, write its models, metrics, loss log and per-epoch grids, and track
the run in MLflow. With `train.nproc > 1` it re-runs itself under torchrun in that many processes
(ganlab.engine.distributed); rank 0 tracks and writes."""

import argparse
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.engine import distributed, interrupt
from ganlab.engine.contract import RunPaths, Tracker, TrainingDiverged
from ganlab.engine.train import fit
from ganlab.io import BadFile
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


if __name__ == "__main__":
    sys.exit(main())
