"""Stage download_mnist on real digits: CSV download and checks, IDX fallback, and mnist.h5 against the CSVs."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import FAST_DOWNLOAD, MNIST_TEST_ROWS, MNIST_TRAIN_ROWS, FakeFiles, MnistDigits, idx_gz, \
    write_data_params

from ganlab.config import DownloadCfg, MnistDataCfg
from ganlab.data.download import DataError
from ganlab.data.mnist import IDX_FILES, prepare_mnist
from helpers import REPO

DL = DownloadCfg(**FAST_DOWNLOAD)


@pytest.fixture(scope="session")
def mnist_idx(mnist_csv: MnistDigits) -> dict[str, bytes]:
    """The same digits as the four gzipped IDX files."""
    files = {}
    for split, (images, labels) in (("train", mnist_csv.train), ("test", mnist_csv.test)):
        images_name, labels_name = IDX_FILES[split]
        files[images_name], files[labels_name] = idx_gz(images), idx_gz(labels)
    return files


def mnist_cfg(server: FakeFiles, idx: dict[str, bytes], **overrides) -> MnistDataCfg:
    return MnistDataCfg(**{
        "train_url": server.url("/mnist_train.csv"), "test_url": server.url("/mnist_test.csv"),
        "train_rows": MNIST_TRAIN_ROWS, "test_rows": MNIST_TEST_ROWS, "idx_mirror": server.url("/idx/"),
        "idx_md5": {name: hashlib.md5(data).hexdigest() for name, data in idx.items()}} | overrides)


def serve_csvs(server: FakeFiles, digits: MnistDigits, train: bytes | None = None) -> None:
    server.files["/mnist_train.csv"] = digits.train_csv if train is None else train
    server.files["/mnist_test.csv"] = digits.test_csv


def assert_h5_holds(h5_path: Path, digits: MnistDigits) -> None:
    with h5py.File(h5_path) as f:
        for split, (images, labels) in (("train", digits.train), ("test", digits.test)):
            assert f[f"{split}/images"].dtype == np.uint8 and f[f"{split}/labels"].dtype == np.int64
            np.testing.assert_array_equal(f[f"{split}/images"][:], images)
            np.testing.assert_array_equal(f[f"{split}/labels"][:], labels)


def test_csvs_are_fetched_checked_and_packed(http_server: FakeFiles, mnist_csv: MnistDigits, mnist_idx: dict,
                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    serve_csvs(http_server, mnist_csv)
    sha = hashlib.sha256(mnist_csv.train_csv).hexdigest()
    prepare_mnist(mnist_cfg(http_server, mnist_idx, train_sha256=sha), DL, tmp_path / "raw", tmp_path / "mnist.h5")

    assert (tmp_path / "raw" / "mnist_train.csv").read_bytes() == mnist_csv.train_csv
    assert (tmp_path / "raw" / "mnist_test.csv").read_bytes() == mnist_csv.test_csv
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["mnist_test.csv", "mnist_train.csv"]
    assert_h5_holds(tmp_path / "mnist.h5", mnist_csv)
    assert "mnist_train.csv: source CSV http://127.0.0.1" in capsys.readouterr().err


def _mutate(csv: bytes, row: int, column: int, value: str) -> bytes:
    lines = csv.decode().splitlines()
    cells = lines[row].split(",")
    cells[column] = value
    lines[row] = ",".join(cells)
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("broken, check", [
    (lambda csv: _mutate(csv, 7, 300, "0,0"), "column check failed: row 8 has 786 values, expected 785"),
    (lambda csv: _mutate(csv, 7, 300, "256"), "pixel check failed: row 8 holds 256, expected 0..255"),
    (lambda csv: _mutate(csv, 7, 0, "10"), "label check failed: row 8 holds 10, expected 0..9"),
    (lambda csv: csv[:csv.rindex(b"\n", 0, -1) + 1], f"row count check failed: {MNIST_TRAIN_ROWS - 1} rows"),
    (lambda csv: _mutate(csv, 7, 5, "1.5"), "integer check failed"),
], ids=["786 columns", "pixel 256", "label 10", "a row short", "not an integer"])
def test_bad_csv_fails_naming_the_check(http_server: FakeFiles, mnist_csv: MnistDigits, mnist_idx: dict,
                                        tmp_path: Path, broken, check: str) -> None:
    serve_csvs(http_server, mnist_csv, train=broken(mnist_csv.train_csv))
    with pytest.raises(DataError, match=f"mnist_train.csv from .*: {check}"):
        prepare_mnist(mnist_cfg(http_server, mnist_idx), DL, tmp_path / "raw", tmp_path / "mnist.h5")
    assert list((tmp_path / "raw").iterdir()) == [] and not (tmp_path / "mnist.h5").exists()


def test_pinned_sha256_is_checked(http_server: FakeFiles, mnist_csv: MnistDigits, mnist_idx: dict,
                                  tmp_path: Path) -> None:
    serve_csvs(http_server, mnist_csv)
    with pytest.raises(DataError, match="mnist_test.csv from .*: sha256 check failed"):
        prepare_mnist(mnist_cfg(http_server, mnist_idx, test_sha256="0" * 64), DL, tmp_path / "raw",
                      tmp_path / "mnist.h5")
    assert not (tmp_path / "raw" / "mnist_test.csv").exists() and not (tmp_path / "mnist.h5").exists()


def test_idx_fallback_writes_identical_csvs(http_server: FakeFiles, mnist_csv: MnistDigits, mnist_idx: dict,
                                           tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    http_server.files.update({f"/idx/{name}": data for name, data in mnist_idx.items()})  # the CSV URLs 404
    prepare_mnist(mnist_cfg(http_server, mnist_idx), DL, tmp_path / "raw", tmp_path / "mnist.h5")

    assert (tmp_path / "raw" / "mnist_train.csv").read_bytes() == mnist_csv.train_csv
    assert (tmp_path / "raw" / "mnist_test.csv").read_bytes() == mnist_csv.test_csv
    assert_h5_holds(tmp_path / "mnist.h5", mnist_csv)
    err = capsys.readouterr().err
    assert "mnist_train.csv: source IDX files at http://127.0.0.1" in err and "HTTP 404" in err


def test_idx_md5_is_checked(http_server: FakeFiles, mnist_csv: MnistDigits, mnist_idx: dict, tmp_path: Path) -> None:
    http_server.files.update({f"/idx/{name}": data for name, data in mnist_idx.items()})
    md5s = {name: hashlib.md5(data).hexdigest() for name, data in mnist_idx.items()}
    md5s["train-labels-idx1-ubyte.gz"] = "0" * 32
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz from .*: md5 check failed"):
        prepare_mnist(mnist_cfg(http_server, mnist_idx, idx_md5=md5s), DL, tmp_path / "raw", tmp_path / "mnist.h5")
    assert not (tmp_path / "raw" / "mnist_train.csv").exists()


def test_stage_script_fails_with_one_line(http_server: FakeFiles, tmp_path: Path) -> None:
    params = write_data_params(tmp_path, {
        "mnist": {"train_url": http_server.url("/mnist_train.csv"), "test_url": http_server.url("/mnist_test.csv"),
                  "idx_mirror": http_server.url("/idx/")},
        "download": FAST_DOWNLOAD})
    run = subprocess.run([sys.executable, "stages/download_mnist.py", "--params", str(params),
                          "--raw-dir", str(tmp_path / "raw"), "--h5", str(tmp_path / "mnist.h5")],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("download_mnist: ") and "train-images-idx3-ubyte.gz: HTTP 404" in last
