"""The real data stages through `dvc repro` in a temporary repository, fed by the loopback server."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import FAST_DOWNLOAD, MNIST_TEST_ROWS, MNIST_TRAIN_ROWS, FakeFiles, MnistDigits, write_zip
from PIL import Image

from helpers import make_repo, run

N_IMAGES = 6


@pytest.mark.e2e
def test_dvc_repro_builds_the_data(http_server: FakeFiles, mnist_csv: MnistDigits, celeba_jpegs: dict[str, bytes],
                                   tmp_path: Path) -> None:
    zip_bytes = write_zip(tmp_path / "served.zip", celeba_jpegs).read_bytes()
    http_server.files.update({"/mnist_train.csv": mnist_csv.train_csv, "/mnist_test.csv": mnist_csv.test_csv,
                              "/img_align_celeba.zip": zip_bytes})

    def edit(p: dict) -> None:
        p["data"]["mnist"].update(train_url=http_server.url("/mnist_train.csv"), train_rows=MNIST_TRAIN_ROWS,
                                  test_url=http_server.url("/mnist_test.csv"), test_rows=MNIST_TEST_ROWS)
        p["data"]["celeba"].update(url=http_server.url("/img_align_celeba.zip"), md5=hashlib.md5(zip_bytes).hexdigest(),
                                   size=len(zip_bytes), n_images=N_IMAGES, workers=2)
        p["data"]["download"].update(FAST_DOWNLOAD)
    root = make_repo(tmp_path / "repo", edit)

    run(["dvc", "repro", "download_mnist", "pack_celeba"], root)

    with h5py.File(root / "data/processed/mnist.h5") as f:
        for split, (images, labels) in (("train", mnist_csv.train), ("test", mnist_csv.test)):
            np.testing.assert_array_equal(f[f"{split}/images"][:], images)
            np.testing.assert_array_equal(f[f"{split}/labels"][:], labels)
    first = [celeba_jpegs[name] for name in sorted(celeba_jpegs)[:N_IMAGES]]
    with h5py.File(root / "data/processed/celeba.h5") as f:
        expected = [np.asarray(Image.open(io.BytesIO(jpeg)).crop((25, 45, 153, 173))) for jpeg in first]
        np.testing.assert_array_equal(f["images"][:], expected)
    with h5py.File(root / "data/processed/celeba_full.h5") as f:
        np.testing.assert_array_equal(f["images"][:], [np.asarray(Image.open(io.BytesIO(jpeg))) for jpeg in first])
    assert (root / "dvc.lock").exists()
    # Nothing is left to do: a second repro only checks.
    assert "didn't change" in run(["dvc", "repro", "download_mnist", "pack_celeba"], root).stdout
