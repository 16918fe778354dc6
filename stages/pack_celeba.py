"""Stage pack_celeba: the first data.celeba.n_images JPEGs of the zip into celeba.h5 (cropped) and celeba_full.h5."""

import argparse
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.data.celeba import pack_celeba
from ganlab.data.download import DataError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--zip", type=Path, required=True, help="img_align_celeba.zip")
    parser.add_argument("--out-dir", type=Path, required=True, help="where celeba.h5 and celeba_full.h5 go")
    args = parser.parse_args()
    try:
        pack_celeba(load_params(args.params).data.celeba, args.zip, args.out_dir)
    except (ConfigError, DataError) as err:
        print(f"pack_celeba: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
