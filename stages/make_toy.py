"""Stage make_toy: the synthetic sets of the 1010 pattern GAN and d2l's 2-D Gaussian GAN, as HDF5."""

import argparse
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.data.toy import make_toy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out-dir", type=Path, default=Path("data/processed"))
    args = ap.parse_args()
    try:
        params = load_params(args.params)
    except ConfigError as err:
        print(f"make_toy: error: {err}", file=sys.stderr)
        return 1
    for path in make_toy(params.data.toy, args.out_dir):
        print(f"make_toy: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
