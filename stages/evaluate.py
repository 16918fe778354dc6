"""Stage evaluate@<variant>: the metrics of one trained variant -> metrics/<variant>/eval.json, and onto its MLflow
training run under `eval/`. A multi-seed variant (train.seeds > 1): every seed that trained is scored and its
numbers go onto its own run; eval.json holds them per seed, and the headline file each number's mean and
interval over the seeds (`fid`, `fid_lo`, `fid_hi`, `n_seeds`, `n_failed`), so `dvc exp show` compares means."""

import argparse
import json
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.engine.contract import RunPaths
from ganlab.evaluation.evaluate import evaluate_variant, headline, headline_over_seeds
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
    try:
        params = load_params(args.params)
        training = read_json(run.train_json) if run.train_json.exists() else None
        if training is not None and "per_seed" in training:
            metrics, short = evaluate_seeds(params, args, run, training)
        else:
            check_training_run(params.tracking, run.train_json)  # before the work, not after it
            metrics = evaluate_variant(params, args.variant, args.root, args.data_dir)
            short = headline(metrics, read_json(run.train_json))
            log_onto_training_run(params.tracking, run.train_json, metrics)
    except (ConfigError, FileNotFoundError, BadFile) as err:
        print(f"evaluate@{args.variant}: error: {err}", file=sys.stderr)
        return 1
    out = run.eval_json
    for path, doc in ((out, metrics), (args.headline or out.parent / "headline.json", {args.variant: short})):
        atomic_write(path, json.dumps(doc, indent=2) + "\n")
    print(f"evaluate@{args.variant}: wrote {out}; eval/ metrics on its MLflow run(s)", file=sys.stderr)
    return 0


def evaluate_seeds(params, args: argparse.Namespace, run: RunPaths, training: dict) -> tuple[dict, dict]:
    """Every seed that trained, scored and logged onto its own run; the failed ones listed, not dropped."""
    ok = [int(s) for s, r in training["per_seed"].items() if r["status"] == "ok"]
    for s in ok:  # every run checked before any work
        check_training_run(params.tracking, run.for_seed(s).train_json)
    per_seed, heads = {}, {}
    for s in ok:
        metrics = evaluate_variant(params, args.variant, args.root, args.data_dir, seed=s)
        log_onto_training_run(params.tracking, run.for_seed(s).train_json, metrics)
        per_seed[str(s)], heads[s] = metrics, headline(metrics, training["per_seed"][str(s)])
        print(f"evaluate@{args.variant}: seed {s} in {metrics['eval_time_s']:.1f} s", file=sys.stderr)
    failed = training.get("failed", {})
    short = headline_over_seeds(heads, len(failed))
    doc = {"variant": args.variant, "seeds": training["seeds"], "n_seeds": len(ok), "n_failed": len(failed),
           "failed": failed, "per_seed": per_seed, "headline": short,
           "per_seed_headline": {str(s): h for s, h in heads.items()}}  # what `ganlab compare` reads
    return doc, short


if __name__ == "__main__":
    sys.exit(main())
