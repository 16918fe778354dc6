"""Benchmark of stage pack_celeba: packing speed and HDF5 size for each compression choice.

    python bench/pack_celeba.py [--n 20000] [--workers 2]

Makes a zip of N synthetic 178x218 JPEGs (quality 90; smooth gradients and blobs plus noise, tuned so that the
decoded frames compress like photographs do), packs it with the real `pack_celeba` under none, lzf and
gzip 1/4/9, and prints a markdown table of images/s, file sizes and the time to read celeba.h5 back whole (what
training does, once). The same goes to bench/results/pack_celeba-<hostname>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import sys
import tempfile
import time
import zipfile
from multiprocessing import Pool
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from ganlab.config import CELEBA_HEIGHT, CELEBA_WIDTH, CelebaDataCfg
from ganlab.data.celeba import CROPPED_NAME, FULL_NAME, pack_celeba

CHOICES = [("none", 0), ("lzf", 0), ("gzip", 1), ("gzip", 4), ("gzip", 9)]
RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_jpeg(seed: int) -> bytes:
    """A face-sized frame: a coloured vertical gradient, two soft blobs, and pixel noise of sd 8.

    The noise level makes the frames compress as real photos do: three sample photos shipped with matplotlib and
    scikit-learn, cut into 41 tiles of 178x218 and saved at quality 90, give lzf 1.28x, gzip-1 1.48x, gzip-9 1.52x;
    these frames give 1.22x, 1.54x, 1.52x (sd 4 would give 1.48x, 2.10x, 2.26x and flatter gzip).
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:CELEBA_HEIGHT, 0:CELEBA_WIDTH] / np.array([CELEBA_HEIGHT, CELEBA_WIDTH]).reshape(2, 1, 1)
    planes = rng.uniform(40, 200, (3, 1, 1)) * (0.6 + 0.4 * y)
    for _ in range(2):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
        planes += rng.uniform(-80, 80, (3, 1, 1)) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / r ** 2)
    planes += rng.normal(0, 8, planes.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(planes, 0, 255).astype(np.uint8).transpose(1, 2, 0)).save(out, "JPEG", quality=90)
    return out.getvalue()


def make_zip(path: Path, n: int, workers: int) -> None:
    with Pool(workers) as pool, zipfile.ZipFile(path, "w") as zf:
        for i, jpeg in enumerate(pool.imap(synthetic_jpeg, range(n), chunksize=64), start=1):
            zf.writestr(f"img_align_celeba/{i:06d}.jpg", jpeg)


def measure(zip_path: Path, out_dir: Path, n: int, workers: int, compression: str, level: int) -> dict:
    cfg = CelebaDataCfg(n_images=n, workers=workers, compression=compression, compression_level=level or 4)
    start = time.perf_counter()
    pack_celeba(cfg, zip_path, out_dir)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    with h5py.File(out_dir / CROPPED_NAME) as f:
        f["images"][:]
    read_seconds = time.perf_counter() - start
    return {"compression": compression + (f" {level}" if compression == "gzip" else ""), "seconds": seconds,
            "images_per_s": n / seconds, "celeba_mb": (out_dir / CROPPED_NAME).stat().st_size / 1e6,
            "celeba_full_mb": (out_dir / FULL_NAME).stat().st_size / 1e6, "read_celeba_s": read_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="number of JPEGs (the stage's default)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = Path(tmp) / "img_align_celeba.zip"
        make_zip(zip_path, args.n, args.workers)
        print(f"{args.n} JPEGs, zip {zip_path.stat().st_size / 1e6:.1f} MB, {args.workers} workers", file=sys.stderr)
        rows = [measure(zip_path, Path(tmp), args.n, args.workers, c, level) for c, level in CHOICES]
    print(f"\npack_celeba, {args.n} images, {args.workers} workers, crop 128\n")
    print("| compression | images/s | celeba.h5 MB | celeba_full.h5 MB | read celeba.h5 s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['compression']} | {r['images_per_s']:.0f} | {r['celeba_mb']:.0f} | {r['celeba_full_mb']:.0f} "
              f"| {r['read_celeba_s']:.2f} |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"pack_celeba-{socket.gethostname() or 'cpu'}.json"
    out.write_text(json.dumps({"n": args.n, "workers": args.workers, "results": rows}, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
