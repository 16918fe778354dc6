"""MNIST: the book's CSVs (no header; per row the label, then 784 pixels), checked, and packed into mnist.h5.

The CSVs come from `data.mnist.train_url`/`test_url`; when a CSV cannot be fetched, the same CSV is written from the
IDX files at `data.mnist.idx_mirror` (each verified against its md5 in `data.mnist.idx_md5`).
"""

from __future__ import annotations

import gzip
import io
from functools import partial
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from ganlab.config import DownloadCfg, MnistDataCfg
from ganlab.data.download import DataError, DownloadError, download, log
from ganlab.io import atomic_path

SPLITS = ("train", "test")
SIDE = 28
COLUMNS = 1 + SIDE * SIDE  # the label, then the pixels row-major
IDX_FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_CSV_ROWS_PER_WRITE = 5_000  # bounds the memory of the IDX -> CSV conversion


def prepare_mnist(cfg: MnistDataCfg, dl: DownloadCfg, raw_dir: Path, h5_path: Path,
                  part_dir: Optional[Path] = None) -> None:
    """Stage download_mnist: `raw_dir`/mnist_{train,test}.csv, then `h5_path` with their images and labels;
    unfinished downloads wait in `part_dir` (default: `raw_dir`)."""
    splits = {split: read_csv(fetch_csv(cfg, dl, split, Path(raw_dir), part_dir), _rows(cfg, split))
              for split in SPLITS}
    write_h5(Path(h5_path), splits)


def fetch_csv(cfg: MnistDataCfg, dl: DownloadCfg, split: str, raw_dir: Path, part_dir: Optional[Path] = None) -> Path:
    """`raw_dir`/mnist_<split>.csv, checked, from its CSV URL or else from the IDX files; says which on stderr."""
    url, sha256 = (cfg.train_url, cfg.train_sha256) if split == "train" else (cfg.test_url, cfg.test_sha256)
    dest, rows = raw_dir / f"mnist_{split}.csv", _rows(cfg, split)
    try:
        download(url, dest, dl, sha256=sha256, validate=partial(read_csv, rows=rows), part_dir=part_dir)
        log(f"{dest.name}: source CSV {url}")
    except DownloadError as csv_err:
        log(f"{dest.name}: {csv_err}; falling back to the IDX files")
        try:
            images, labels = fetch_idx(cfg, dl, split, raw_dir, part_dir)
        except DownloadError as idx_err:
            both = f"{dest.name}: the CSV failed ({csv_err}) and so did the IDX files ({idx_err})"
            raise DownloadError(both) from None
        # The pinned sha256 is of the CSV download; the IDX files were checked by md5 instead.
        with atomic_path(dest) as tmp:
            write_csv(tmp, images, labels)
            read_csv(tmp, rows, label=f"{dest.name} written from the IDX files")
        log(f"{dest.name}: source IDX files at {cfg.idx_mirror}")
    return dest


def fetch_idx(cfg: MnistDataCfg, dl: DownloadCfg, split: str, raw_dir: Path,
              part_dir: Optional[Path] = None) -> tuple[np.ndarray, np.ndarray]:
    """The images [N,28,28] and labels [N] of one split from the IDX mirror, each file checked by its md5."""
    arrays = []
    for name in IDX_FILES[split]:
        url = cfg.idx_mirror.rstrip("/") + "/" + name
        arrays.append(read_idx(download(url, raw_dir / name, dl, md5=cfg.idx_md5[name], part_dir=part_dir)))
    images, labels = arrays
    if images.shape[1:] != (SIDE, SIDE) or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"IDX files {IDX_FILES[split]}: shapes {images.shape} and {labels.shape} do not match")
    return images, labels


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (gzip): magic 0,0,0x08,ndim, then ndim big-endian int32 sizes, then data."""
    data = gzip.decompress(path.read_bytes())
    if data[:3] != b"\x00\x00\x08":
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, ">i4", count=ndim, offset=4))
    pixels = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if pixels.size != np.prod(shape):
        raise DataError(f"{path}: {pixels.size} values for the shape {shape} in its header")
    return pixels.reshape(shape)


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The book's format: per row the label, then the pixels, comma-separated, no header."""
    text = np.array([str(i) for i in range(256)], dtype=object)  # every value is 0..255: look them up
    table = np.concatenate([labels.reshape(-1, 1), images.reshape(len(images), -1)], axis=1).astype(np.uint8)
    with open(path, "w") as f:
        for start in range(0, len(table), _CSV_ROWS_PER_WRITE):
            rows = text[table[start:start + _CSV_ROWS_PER_WRITE]].tolist()
            f.write("".join(",".join(row) + "\n" for row in rows))


def read_csv(path: Path, rows: int, label: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N,28,28] and labels int64 [N] of an MNIST CSV; DataError names the file (or `label`) and
    the check that fails."""
    data = Path(path).read_bytes()
    label = label or str(path)
    lines = [line for line in data.splitlines() if line.strip()]
    if len(lines) != rows:
        raise DataError(f"{label}: row count check failed: {len(lines)} rows, expected {rows}")
    for i, line in enumerate(lines):
        if line.count(b",") != COLUMNS - 1:
            raise DataError(f"{label}: column check failed: row {i + 1} has {line.count(b',') + 1} values, "
                            f"expected {COLUMNS}")
    try:
        table = np.loadtxt(io.BytesIO(data), delimiter=",", dtype=np.int32, ndmin=2)
    except ValueError as err:
        raise DataError(f"{label}: integer check failed: {err}") from None
    _check_range(label, "label", table[:, 0], 9)
    _check_range(label, "pixel", table[:, 1:], 255)
    return table[:, 1:].astype(np.uint8).reshape(-1, SIDE, SIDE), table[:, 0].astype(np.int64)


def _check_range(label: str, what: str, values: np.ndarray, high: int) -> None:
    bad = np.argwhere((values < 0) | (values > high))
    if len(bad):
        row = bad[0][0]
        raise DataError(f"{label}: {what} check failed: row {row + 1} holds {values[tuple(bad[0])]}, "
                        f"expected 0..{high}")


def write_h5(path: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """`<split>/images` uint8 [N,28,28] and `<split>/labels` int64 [N] per split, written atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for split, (images, labels) in splits.items():
            f.create_dataset(f"{split}/images", data=images)
            f.create_dataset(f"{split}/labels", data=labels)


def _rows(cfg: MnistDataCfg, split: str) -> int:
    return cfg.train_rows if split == "train" else cfg.test_rows
