"""The one download function against a loopback server: resume, retries, checksums, Drive's confirmation page."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import FAST_DOWNLOAD, FakeFiles

from ganlab.config import CelebaDataCfg, DownloadCfg
from ganlab.data import celeba
from ganlab.data.download import DataError, DownloadError, confirmation_url, download

BODY = bytes(range(256)) * 800  # 204,800 bytes
MD5 = hashlib.md5(BODY).hexdigest()


def cfg(**overrides) -> DownloadCfg:
    return DownloadCfg(**(FAST_DOWNLOAD | overrides))


@pytest.fixture
def served(http_server: FakeFiles) -> FakeFiles:
    http_server.files["/f.bin"] = BODY
    return http_server


def test_interrupted_transfer_resumes_on_rerun(served: FakeFiles, tmp_path: Path) -> None:
    served.cut("/f.bin", after=50_000)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="f.bin.*gave up after 1 attempt"):
        download(served.url("/f.bin"), dest, cfg(retries=0), md5=MD5)
    part = tmp_path / "f.bin.part"
    kept = part.stat().st_size
    assert 0 < kept <= 50_000 and not dest.exists()

    download(served.url("/f.bin"), dest, cfg(retries=0), md5=MD5)
    assert dest.read_bytes() == BODY and not part.exists()
    assert served.requests[-1][1] == f"bytes={kept}-"
    assert served.bytes_sent["/f.bin"] < 2 * len(BODY)


def test_interrupted_transfer_resumes_within_one_call(served: FakeFiles, tmp_path: Path) -> None:
    served.cut("/f.bin", after=100_000)
    download(served.url("/f.bin"), tmp_path / "f.bin", cfg(), md5=MD5)
    assert (tmp_path / "f.bin").read_bytes() == BODY
    assert served.requests[0][1] is None and served.requests[1][1].startswith("bytes=")
    assert served.bytes_sent["/f.bin"] < 2 * len(BODY)


def test_server_ignoring_range_restarts_cleanly(served: FakeFiles, tmp_path: Path) -> None:
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes from elsewhere")
    served.ignore_range.add("/f.bin")
    download(served.url("/f.bin"), tmp_path / "f.bin", cfg(), md5=MD5)
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_complete_part_is_not_fetched_again(served: FakeFiles, tmp_path: Path) -> None:
    (tmp_path / "f.bin.part").write_bytes(BODY)  # e.g. killed between the transfer and the rename
    download(served.url("/f.bin"), tmp_path / "f.bin", cfg(), md5=MD5)
    assert (tmp_path / "f.bin").read_bytes() == BODY and served.bytes_sent.get("/f.bin", 0) == 0


def test_checksum_mismatch_leaves_nothing(served: FakeFiles, tmp_path: Path) -> None:
    served.files["/f.bin"] = BODY[:-1] + b"\x00"
    with pytest.raises(DataError, match=f"f.bin.*md5 check failed.*expected {MD5}"):
        download(served.url("/f.bin"), tmp_path / "f.bin", cfg(), md5=MD5)
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_names_the_check(served: FakeFiles, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="size check failed: 204800 bytes, expected 300000"):
        download(served.url("/f.bin"), tmp_path / "f.bin", cfg(), size=300_000)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="announces 204800 bytes, more than the expected size of 5 bytes; refused"):
        download(served.url("/f.bin"), tmp_path / "f.bin", cfg(), size=5)
    assert list(tmp_path.iterdir()) == []


def test_404_fails_at_once(served: FakeFiles, tmp_path: Path) -> None:
    url = served.url("/missing.bin")
    with pytest.raises(DownloadError, match=f"{url}: HTTP 404"):
        download(url, tmp_path / "missing.bin", cfg(retries=5, backoff=10.0))
    assert len(served.requests) == 1


def test_500_is_retried_then_succeeds(served: FakeFiles, tmp_path: Path) -> None:
    served.fail("/f.bin", 500, times=2)
    download(served.url("/f.bin"), tmp_path / "f.bin", cfg(retries=2), md5=MD5)
    assert (tmp_path / "f.bin").read_bytes() == BODY and len(served.requests) == 3


def test_500_forever_gives_up_after_the_retries(served: FakeFiles, tmp_path: Path) -> None:
    served.fail("/f.bin", 503)
    with pytest.raises(DownloadError, match=r"HTTP 503.*gave up after 3 attempt\(s\)"):
        download(served.url("/f.bin"), tmp_path / "f.bin", cfg(retries=2))
    assert len(served.requests) == 3 and list(tmp_path.iterdir()) == []


def test_refused_connection_is_a_download_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="127.0.0.1:9/f.bin"):
        download("http://127.0.0.1:9/f.bin", tmp_path / "f.bin", cfg(retries=1))


def drive_page(action: str, file_id: str) -> bytes:
    """Like Drive's 'Google Drive can't scan this file for viruses' page."""
    return f"""<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
    <p>img_align_celeba.zip (1.3G) is too large for Google to scan for viruses.</p>
    <form id="download-form" action="{action}" method="get">
    <input type="submit" id="uc-download-link" value="Download anyway"/>
    <input type="hidden" name="id" value="{file_id}"><input type="hidden" name="export" value="download">
    <input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="4a6e-b7">
    </form></body></html>""".encode()


def test_drive_confirmation_page_is_followed(served: FakeFiles, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    served.files["/uc"] = drive_page(served.url("/download"), "ABC")
    served.content_types["/uc"] = "text/html; charset=utf-8"
    served.files["/download"] = BODY
    monkeypatch.setattr(celeba, "GDRIVE_URL", served.url("/uc?export=download&id={id}"))
    zip_cfg = CelebaDataCfg(url=None, gdrive_id="ABC", md5=MD5, size=len(BODY))

    path = celeba.download_celeba(zip_cfg, cfg(), tmp_path)
    assert path == tmp_path / "img_align_celeba.zip" and path.read_bytes() == BODY
    assert [p for p, _ in served.requests] == ["/uc?export=download&id=ABC",
                                              "/download?id=ABC&export=download&confirm=t&uuid=4a6e-b7"]


def test_old_drive_link_with_confirm_token() -> None:
    page = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=Zx_9&amp;id=ABC">Download anyway</a>'
    assert (confirmation_url(page, "https://drive.google.com/uc?export=download&id=ABC")
            == "https://drive.google.com/uc?export=download&confirm=Zx_9&id=ABC")


def test_html_page_without_a_form_is_an_error(served: FakeFiles, tmp_path: Path) -> None:
    served.files["/quota"] = b"<html><body>Too many users have viewed or downloaded this file recently.</body></html>"
    served.content_types["/quota"] = "text/html"
    with pytest.raises(DownloadError, match="HTML page, not the file"):
        download(served.url("/quota"), tmp_path / "q.zip", cfg())
    assert list(tmp_path.iterdir()) == []


def test_celeba_failure_says_where_to_put_the_zip(served: FakeFiles, tmp_path: Path) -> None:
    zip_cfg = CelebaDataCfg(url=served.url("/gone.zip"), md5=MD5, size=len(BODY))
    dest = tmp_path / "raw" / "img_align_celeba.zip"
    with pytest.raises(DownloadError, match=f"HTTP 404.*put it at {dest} \\(md5 {MD5}, {len(BODY)} bytes\\)"):
        celeba.download_celeba(zip_cfg, cfg(), tmp_path / "raw")


def test_celeba_zip_placed_by_hand_is_used_without_network(tmp_path: Path) -> None:
    (tmp_path / "img_align_celeba.zip").write_bytes(BODY)
    zip_cfg = CelebaDataCfg(url="http://127.0.0.1:9/unreachable.zip", md5=MD5, size=len(BODY))
    assert celeba.download_celeba(zip_cfg, cfg(retries=0), tmp_path).read_bytes() == BODY


def test_celeba_zip_placed_by_hand_is_checked(tmp_path: Path) -> None:
    (tmp_path / "img_align_celeba.zip").write_bytes(BODY[1:])
    zip_cfg = CelebaDataCfg(url="http://127.0.0.1:9/unreachable.zip", md5=MD5, size=len(BODY))
    with pytest.raises(DataError, match="size check failed: 204799 bytes, expected 204800"):
        celeba.download_celeba(zip_cfg, cfg(retries=0), tmp_path)
    assert (tmp_path / "img_align_celeba.zip").exists()  # the user's file is never deleted


# --------------------------------------------------------------------------------------------------- size caps
@pytest.mark.parametrize("announced", [True, False])
def test_a_server_sending_more_than_max_bytes_is_cut_off(served: FakeFiles, tmp_path: Path, announced: bool) -> None:
    """No size in params: data.download.max_bytes caps the transfer, whether the server announces its length
    (refused before the body) or not (stopped at the cap); nothing is left on disk."""
    if not announced:
        served.no_length.add("/f.bin")
    with pytest.raises(DownloadError, match=r"more than data.download.max_bytes \(100000 bytes\)"):
        download(served.url("/f.bin"), tmp_path / "f.bin", cfg(max_bytes=100_000, chunk_bytes=1024))
    assert list(tmp_path.iterdir()) == []
    assert len(served.requests) == 1  # not retried


def test_the_expected_size_caps_the_transfer(served: FakeFiles, tmp_path: Path) -> None:
    served.no_length.add("/f.bin")
    with pytest.raises(DownloadError, match="more than the expected size of 1000 bytes"):
        download(served.url("/f.bin"), tmp_path / "f.bin", cfg(chunk_bytes=512), size=1000)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------- early ends
@pytest.mark.parametrize("size", [None, len(BODY)])
def test_an_early_end_without_content_length_is_resumed(served: FakeFiles, tmp_path: Path, size) -> None:
    """HTTP/1.0 without Content-Length: a cut connection looks like the end of the file. With the size in params
    the shortfall is seen at once; without it a Range probe for the following bytes finds the rest."""
    served.no_length.add("/f.bin")
    served.cut("/f.bin", after=70_000)
    download(served.url("/f.bin"), tmp_path / "f.bin", cfg(), size=size)
    assert (tmp_path / "f.bin").read_bytes() == BODY
    assert [r for _, r in served.requests] == [None, "bytes=70000-"]
    assert served.bytes_sent["/f.bin"] == len(BODY)


def test_a_complete_transfer_without_length_is_confirmed_by_a_probe(served: FakeFiles, tmp_path: Path) -> None:
    served.no_length.add("/f.bin")
    download(served.url("/f.bin"), tmp_path / "f.bin", cfg())
    assert (tmp_path / "f.bin").read_bytes() == BODY
    assert [r for _, r in served.requests] == [None, f"bytes={len(BODY)}-"]  # answered 416: nothing follows


def test_without_length_or_range_support_two_whole_transfers_must_agree(served: FakeFiles, tmp_path: Path) -> None:
    served.no_length.add("/f.bin")
    served.ignore_range.add("/f.bin")
    served.cut("/f.bin", after=70_000)
    download(served.url("/f.bin"), tmp_path / "f.bin", cfg(retries=3))
    assert (tmp_path / "f.bin").read_bytes() == BODY
    assert len(served.requests) == 3  # cut (70,000), whole (differs), whole again (agrees)


def test_the_same_early_end_every_time_is_caught_by_the_checksum(served: FakeFiles, tmp_path: Path) -> None:
    """Without length or Range support, a server that always stops at byte 70,000 cannot be told from a file of
    70,000 bytes: two transfers agree. The md5 in params is what catches it; nothing is left behind."""
    served.no_length.add("/f.bin")
    served.ignore_range.add("/f.bin")
    served.cut("/f.bin", after=70_000, times=10)
    with pytest.raises(DataError, match="md5 check failed"):
        download(served.url("/f.bin"), tmp_path / "f.bin", cfg(retries=2), md5=MD5)
    assert list(tmp_path.iterdir()) == []
