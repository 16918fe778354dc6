"""Stage report: all variants' metrics, charts and pictures, and a verdict on every source claim ->
reports/report.{html,md}, logged to MLflow as its own run."""

import argparse
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.io import BadFile
from ganlab.report.report import build_report
from ganlab.tracking.runs import log_summary_run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--root", type=Path, default=Path("."), help="where metrics/ plots/ samples/ are")
    ap.add_argument("--out-dir", type=Path, default=Path("reports/all"))
    ap.add_argument("--name", default="report", help="the stage's name, and the name of its MLflow run")
    args = ap.parse_args()
    try:
        params = load_params(args.params)
        paths, metrics = build_report(params, args.root, args.out_dir, Path(args.params))
    except (ConfigError, BadFile) as err:
        print(f"{args.name}: error: {err}", file=sys.stderr)
        return 1
    run_id = log_summary_run(args.name, params.tracking, args.name, metrics, args.out_dir)
    print(f"{args.name}: wrote {', '.join(map(str, paths))}; MLflow run {run_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
