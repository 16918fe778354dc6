"""Stage download_mnist: the MNIST CSVs (from their URLs, or else from the IDX mirror), checked, and mnist.h5."""

import argparse
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.data.download import DataError
from ganlab.data.mnist import prepare_mnist


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--raw-dir", type=Path, required=True, help="where mnist_train.csv and mnist_test.csv go")
    parser.add_argument("--h5", type=Path, required=True, help="the HDF5 file written from the CSVs")
    parser.add_argument("--part-dir", type=Path, help="where unfinished downloads wait (default: --raw-dir)")
    args = parser.parse_args()
    try:
        data = load_params(args.params).data
        prepare_mnist(data.mnist, data.download, args.raw_dir, args.h5, args.part_dir)
    except (ConfigError, DataError) as err:
        print(f"download_mnist: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
