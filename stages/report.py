"""Stage report: all variants' metrics, charts and pictures, and a verdict on every source claim ->
reports/report.{html,md}, logged to MLflow as its own run."""

import argparse
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.report import build_report
from ganlab.tracking import log_summary_run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--root", type=Path, default=Path("."), help="where metrics/ plots/ samples/ are")
    ap.add_argument("--out-dir", type=Path, default=Path("reports"))
    args = ap.parse_args()
    try:
        params = load_params(args.params)
    except ConfigError as err:
        print(f"report: error: {err}", file=sys.stderr)
        return 1
    paths, metrics = build_report(params, args.root, args.out_dir, Path(args.params))
    run_id = log_summary_run("report", params.tracking, "report", metrics, args.out_dir)
    print(f"report: wrote {', '.join(map(str, paths))}; MLflow run {run_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
