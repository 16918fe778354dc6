"""Stage sample@<variant>: grids, training progression, interpolations and seed arithmetic of one trained variant
-> samples/<variant>/sample/."""

import argparse
import json
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.sample import write_samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("variant")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data-dir", type=Path, default=Path("data/processed"))
    ap.add_argument("--root", type=Path, default=Path("."), help="where models/ and samples/ are")
    ap.add_argument("--index", type=Path, help="also list the pictures here (JSON): dvc.yaml puts it where the "
                                                "curriculum report's dependencies reach it")
    args = ap.parse_args()
    try:
        paths = write_samples(load_params(args.params), args.variant, args.root, args.data_dir)
    except (ConfigError, FileNotFoundError) as err:
        print(f"sample@{args.variant}: error: {err}", file=sys.stderr)
        return 1
    if args.index:
        args.index.parent.mkdir(parents=True, exist_ok=True)
        args.index.write_text(json.dumps({"variant": args.variant, "pictures": sorted(p.name for p in paths)}) + "\n")
    print(f"sample@{args.variant}: wrote {', '.join(p.name for p in paths)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
