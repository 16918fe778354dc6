"""Stage evaluate@<variant>: the metrics of one trained variant -> metrics/<variant>/eval.json, and onto its MLflow
training run under `eval/`."""

import argparse
import json
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.engine.contract import RunPaths
from ganlab.evaluation.evaluate import evaluate_variant, headline
from ganlab.io import BadFile, atomic_write, read_json
from ganlab.tracking.runs import check_training_run, log_onto_training_run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("variant")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data-dir", type=Path, default=Path("data/processed"))
    ap.add_argument("--root", type=Path, default=Path("."), help="where models/ metrics/ plots/ are")
    ap.add_argument("--headline", type=Path, help="the headline metrics file (default: beside eval.json)")
    args = ap.parse_args()
    run = RunPaths.for_variant(args.variant, args.root, args.data_dir)
    train_json = run.train_json
    try:
        params = load_params(args.params)
        check_training_run(params.tracking, train_json)  # before the work, not after it
        metrics = evaluate_variant(params, args.variant, args.root, args.data_dir)
        training = read_json(train_json)
    except (ConfigError, FileNotFoundError, BadFile) as err:
        print(f"evaluate@{args.variant}: error: {err}", file=sys.stderr)
        return 1
    out = run.eval_json
    short = args.headline or out.parent / "headline.json"
    for path, doc in ((out, metrics), (short, {args.variant: headline(metrics, training)})):
        atomic_write(path, json.dumps(doc, indent=2) + "\n")
    run_id = log_onto_training_run(params.tracking, train_json, metrics)
    print(f"evaluate@{args.variant}: wrote {out} in {metrics['eval_time_s']:.1f} s; eval/ metrics on MLflow run "
          f"{run_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
