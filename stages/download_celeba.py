"""Stage download_celeba: img_align_celeba.zip from data.celeba.url or Google Drive, checked by size and md5."""

import argparse
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.data.celeba import download_celeba
from ganlab.data.download import DataError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--raw-dir", type=Path, required=True, help="where img_align_celeba.zip goes")
    args = parser.parse_args()
    try:
        data = load_params(args.params).data
        download_celeba(data.celeba, data.download, args.raw_dir)
    except (ConfigError, DataError) as err:
        print(f"download_celeba: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
