"""Stage pack_celeba on a small zip of generated JPEGs, pixel for pixel against Pillow."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import write_data_params, write_zip
from PIL import Image

from ganlab.config import CelebaDataCfg, ConfigError, load_params
from ganlab.data.celeba import crop_box, pack_celeba
from ganlab.data.download import DataError

BOOK_CROP = (25, 45, 153, 173)  # Pillow's (left, upper, right, lower): rows 45:173, columns 25:153 (book §3.1.7)


def pixels(jpeg: bytes, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    image = Image.open(io.BytesIO(jpeg))
    return np.asarray(image.crop(box) if box else image)


def pack(zip_path: Path, out_dir: Path, **cfg) -> None:
    pack_celeba(CelebaDataCfg(**({"n_images": 10, "workers": 2} | cfg)), zip_path, out_dir)


def test_crop_box_is_the_books() -> None:
    assert crop_box(128) == (45, 25, 128, 128)
    assert crop_box(None) == (0, 0, 218, 178)
    assert crop_box(64) == (77, 57, 64, 64)


def test_pack_matches_pillow(celeba_jpegs: dict[str, bytes], tmp_path: Path) -> None:
    zip_path = write_zip(tmp_path / "celeba.zip", celeba_jpegs)  # stored shuffled
    pack(zip_path, tmp_path / "out")

    first = sorted(celeba_jpegs)[:10]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["celeba.h5", "celeba_full.h5"]
    with h5py.File(tmp_path / "out" / "celeba.h5") as cropped, h5py.File(tmp_path / "out" / "celeba_full.h5") as full:
        assert cropped["images"].shape == (10, 128, 128, 3) and cropped["images"].dtype == np.uint8
        assert cropped["images"].chunks == (1, 128, 128, 3) and full["images"].chunks == (1, 218, 178, 3)
        np.testing.assert_array_equal(cropped["images"][:], [pixels(celeba_jpegs[n], BOOK_CROP) for n in first])
        np.testing.assert_array_equal(full["images"][:], [pixels(celeba_jpegs[n]) for n in first])
        for f in (cropped, full):
            assert [n.decode() for n in f["names"][:]] == [n.split("/")[-1] for n in first]
            assert f.attrs["source_md5"] == hashlib.md5(zip_path.read_bytes()).hexdigest()
            assert f.attrs["count"] == 10 and f.attrs["skipped_corrupt"] == 0
        assert list(cropped.attrs["crop_box"]) == [45, 25, 128, 128]
        assert list(full.attrs["crop_box"]) == [0, 0, 218, 178]


@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_compression_keeps_the_pixels(celeba_jpegs: dict[str, bytes], tmp_path: Path, compression: str) -> None:
    pack(write_zip(tmp_path / "celeba.zip", celeba_jpegs), tmp_path, n_images=3, crop=None, compression=compression,
         compression_level=1)
    with h5py.File(tmp_path / "celeba.h5") as f:
        assert f["images"].compression == compression
        np.testing.assert_array_equal(f["images"][:], [pixels(celeba_jpegs[n]) for n in sorted(celeba_jpegs)[:3]])


@pytest.mark.parametrize("entry", ["../evil.jpg", "/etc/evil.jpg", "img_align_celeba/../../evil.jpg"])
def test_escaping_entry_is_refused(celeba_jpegs: dict[str, bytes], tmp_path: Path, entry: str) -> None:
    zip_path = write_zip(tmp_path / "celeba.zip", celeba_jpegs | {entry: b"x"})
    with pytest.raises(DataError, match=f"entry '{entry}' has an absolute path or climbs out"):
        pack(zip_path, tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def with_corrupt(celeba_jpegs: dict[str, bytes]) -> dict[str, bytes]:
    name = "img_align_celeba/000004.jpg"
    return celeba_jpegs | {name: celeba_jpegs[name][:len(celeba_jpegs[name]) // 2]}  # truncated


def test_corrupt_jpeg_stops_naming_it(celeba_jpegs: dict[str, bytes], tmp_path: Path) -> None:
    zip_path = write_zip(tmp_path / "celeba.zip", with_corrupt(celeba_jpegs))
    with pytest.raises(DataError, match="img_align_celeba/000004.jpg: corrupt JPEG .*skip_corrupt"):
        pack(zip_path, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_corrupt_jpeg_is_skipped_and_counted(celeba_jpegs: dict[str, bytes], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    pack(write_zip(tmp_path / "celeba.zip", with_corrupt(celeba_jpegs)), tmp_path, skip_corrupt=True)
    kept = [n for n in sorted(celeba_jpegs)[:10] if not n.endswith("000004.jpg")]
    with h5py.File(tmp_path / "celeba.h5") as f:
        assert f.attrs["skipped_corrupt"] == 1 and f.attrs["count"] == 9 and f["images"].shape[0] == 9
        np.testing.assert_array_equal(f["images"][:], [pixels(celeba_jpegs[n], BOOK_CROP) for n in kept])
    assert "skipped 1 corrupt JPEG(s): img_align_celeba/000004.jpg" in capsys.readouterr().err


def test_wrong_size_is_an_error_naming_the_file(celeba_jpegs: dict[str, bytes], tmp_path: Path) -> None:
    small = io.BytesIO()
    Image.new("RGB", (100, 100)).save(small, format="JPEG")
    zip_path = write_zip(tmp_path / "celeba.zip", celeba_jpegs | {"img_align_celeba/000002.jpg": small.getvalue()})
    with pytest.raises(DataError, match="000002.jpg: 100x100 pixels, expected .* 178x218"):
        pack(zip_path, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_too_few_jpegs_is_an_error(celeba_jpegs: dict[str, bytes], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds 24 JPEGs, but data.celeba.n_images asks for 25"):
        pack(write_zip(tmp_path / "celeba.zip", celeba_jpegs), tmp_path, n_images=25)


def test_crop_larger_than_the_image_fails_in_load_params(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.celeba.crop = 200: a 200x200 crop is larger than"):
        load_params(write_data_params(tmp_path, {"celeba": {"crop": 200}}))
