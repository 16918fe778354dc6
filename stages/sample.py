"""Stage sample@<variant>: grids, training progression, interpolations and seed arithmetic of one trained variant
-> samples/<variant>/sample/, also as images `sample/<name>` on the variant's MLflow training run. A multi-seed
variant (train.seeds > 1): the pictures of its first seed that trained."""

import argparse
import json
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.engine.contract import RunPaths
from ganlab.evaluation.sample import write_samples
from ganlab.io import BadFile, atomic_write, read_json
from ganlab.tracking.runs import check_training_run, log_onto_training_run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("variant")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data-dir", type=Path, default=Path("data/processed"))
    ap.add_argument("--root", type=Path, default=Path("."), help="where models/ and samples/ are")
    ap.add_argument("--index", type=Path, help="also list the pictures here (JSON): dvc.yaml puts it where the "
                                                "curriculum report's dependencies reach it")
    args = ap.parse_args()
    run = RunPaths.for_variant(args.variant, args.root, args.data_dir)
    train_json, seed = run.train_json, None
    try:
        params = load_params(args.params)
        if train_json.exists() and "per_seed" in (training := read_json(train_json)):
            # a multi-seed variant: the pictures of its first seed that trained (each seed's grids are in progress/)
            seed = next(int(s) for s, r in training["per_seed"].items() if r["status"] == "ok")
            train_json = run.for_seed(seed).train_json
        check_training_run(params.tracking, train_json)
        paths = write_samples(params, args.variant, args.root, args.data_dir, seed)
    except (ConfigError, FileNotFoundError, BadFile) as err:
        print(f"sample@{args.variant}: error: {err}", file=sys.stderr)
        return 1
    if args.index:
        index = {"variant": args.variant, "pictures": sorted(p.name for p in paths)}
        atomic_write(args.index, json.dumps(index) + "\n")
    run_id = log_onto_training_run(params.tracking, train_json, {}, {f"sample/{p.stem}": p for p in paths})
    print(f"sample@{args.variant}: wrote {', '.join(p.name for p in paths)}; images on MLflow run {run_id}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
