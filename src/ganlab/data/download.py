"""One download mechanism for every data file: streaming, retries, resume, checksums and an atomic rename.

A transfer goes to `<name>.part` next to the target. An interrupted transfer leaves the part behind and the next
attempt (a retry, or a re-run of the stage) asks only for the missing bytes with an HTTP Range request. The part is
checked (size, md5, sha256, a caller's format check) and renamed to the target only when every check passes;
a part that fails a check is deleted, so a failure never leaves an output behind.

Size cap: a server may send at most the file's expected `size` when the caller knows it (any byte more is wrong
already, so the margin is 0), else at most `data.download.max_bytes`. A larger Content-Length (or Content-Range
total) is refused before the body is read, and a body that runs past the cap is cut off there; the part is
deleted and the error says which limit was hit.

Early ends: with a Content-Length (or Content-Range) an early end is a short count, retried from where it stopped.
An HTTP/1.0-style answer without a length ends when the connection closes, the same whether the file is whole or
the connection broke, so such a transfer is complete only when confirmed:
- by the expected `size`, when the caller knows it (fewer bytes: resumed with a Range request);
- else by a Range probe for the bytes after the part's end: `416 Range Not Satisfiable` with
  `Content-Range: bytes */<part size>` confirms it; `206` sends the missing rest, which is appended (and confirmed
  the same way); a `200` (a server without Range support) sends the whole file again, and two whole transfers of
  the same length confirm each other.
Each transfer, probe or retry counts as one of the `retries` + 1 attempts; only failures wait `backoff`.
An md5 or sha256 in params is checked after all this, so a file that is merely short never passes either way.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Optional
from urllib.parse import urlencode, urljoin

import requests
from tqdm import tqdm

from ganlab.config import DownloadCfg
from ganlab.io import commit


class DataError(Exception):
    """A data file is wrong or could not be made; the message names the file and the check. Stages print it."""


class DownloadError(DataError):
    """A file could not be fetched; the message names the URL and the reason."""


class _Retryable(Exception):
    """A failure worth another attempt: a 5xx answer or a transfer that ended early."""


# Failures after which a later attempt may succeed; a 4xx answer is not among them.
_RETRYABLE = (_Retryable, requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def log(message: str) -> None:
    """One line on stderr that does not break a progress bar."""
    tqdm.write(message, file=sys.stderr)


def download(url: str, dest: Path, cfg: DownloadCfg, *, size: Optional[int] = None, md5: Optional[str] = None,
             sha256: Optional[str] = None, validate: Optional[Callable[..., object]] = None,
             part_dir: Optional[Path] = None) -> Path:
    """Fetch `url` to `dest`, checked by `size`, `md5`, `sha256` and `validate(path, label=...)`, which raises
    DataError starting with `label` (the name of the file in messages).

    A `dest` that already exists (a file put there by hand) is checked the same way and used without any network
    access; when it fails a check it is left alone and the error says so. `part_dir`: where the part is kept,
    when not next to `dest` (DVC deletes a stage's outputs before it runs; a part outside them survives).
    """
    dest = Path(dest)
    if dest.exists():
        verify(dest, size=size, md5=md5, sha256=sha256, validate=validate,
               label=f"{dest} (already present: delete it to download again)")
        log(f"{dest}: already present and verified; not downloading")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = Path(part_dir or dest.parent) / (dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    limit = Limit(size, f"the expected size of {size} bytes") if size is not None else \
        Limit(cfg.max_bytes, f"data.download.max_bytes ({cfg.max_bytes} bytes)")
    with requests.Session() as session:
        _fetch_with_retries(session, url, part, cfg, limit, known=size is not None)
    try:
        verify(part, size=size, md5=md5, sha256=sha256, validate=validate, label=f"{dest.name} from {url}")
    except DataError:
        part.unlink()
        raise
    commit(part, dest)
    return dest


def verify(path: Path, *, size: Optional[int] = None, md5: Optional[str] = None, sha256: Optional[str] = None,
           validate: Optional[Callable[..., object]] = None, label: Optional[str] = None) -> None:
    """Raise DataError naming the first check `path` fails: size, md5, sha256, then the caller's `validate`."""
    label = label or str(path)
    if size is not None and path.stat().st_size != size:
        raise DataError(f"{label}: size check failed: {path.stat().st_size} bytes, expected {size}")
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is not None:
            got = file_digest(path, algorithm)
            if got != expected.lower():
                raise DataError(f"{label}: {algorithm} check failed: got {got}, expected {expected}")
    if validate is not None:
        validate(path, label=label)


def file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


@dataclass(frozen=True)
class Limit:
    """The most bytes a server may send for one file, and where that number comes from (for messages)."""

    bytes: int
    source: str


def _fetch_with_retries(session: requests.Session, url: str, part: Path, cfg: DownloadCfg, limit: Limit,
                        known: bool) -> None:
    """Transfers until the part is confirmed complete (see the module's doc), at most `retries` + 1 of them."""
    attempts = cfg.retries + 1
    for attempt in range(attempts):
        try:
            if _fetch(session, url, part, cfg, limit, known):
                return
            why = "the transfer ended without a length to check it against"
        except _RETRYABLE as err:
            why = _reason(err)
            if attempt + 1 < attempts:
                wait = cfg.backoff * 2 ** attempt
                log(f"{url}: {why}; retry {attempt + 1} of {cfg.retries} in {wait:g} s")
                time.sleep(wait)
            continue
        if attempt + 1 < attempts:
            log(f"{url}: {why}; asking the server whether more follows (attempt {attempt + 2} of {attempts})")
    raise DownloadError(f"{url}: {why}; gave up after {attempts} attempt(s)")


def _reason(err: Exception) -> str:
    """The cause in a few words: requests' messages nest urllib3's whole chain of exceptions."""
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return "the connection broke during the transfer"
    cause = getattr(err.args[0], "reason", None) if err.args else None  # urllib3's MaxRetryError.reason
    if cause is not None:
        return str(cause).split(": ", 1)[-1]  # drop the "HTTPConnection(host=..., port=...)" prefix
    return str(err) or type(err).__name__


def _fetch(session: requests.Session, url: str, part: Path, cfg: DownloadCfg, limit: Limit, known: bool) -> bool:
    """One attempt: ask for the bytes `part` lacks, through a Drive-style confirmation page if one comes back.
    True when the part is then confirmed complete."""
    offset = part.stat().st_size if part.exists() else 0
    resp = _get(session, url, offset, cfg)
    if _is_html(resp):
        # Large Google Drive files answer with a "can't scan for viruses" page; its form leads to the file.
        next_url = confirmation_url(resp.text, resp.url)
        resp.close()
        if next_url is None:
            raise DownloadError(f"{url}: the server sent an HTML page, not the file (a quota or error page?)")
        resp = _get(session, next_url, offset, cfg)
        if _is_html(resp):
            resp.close()
            raise DownloadError(f"{url}: Drive's confirmation led to another HTML page, not the file")
    with resp:
        return _write_body(resp, part, offset, cfg, limit, known)


def _get(session: requests.Session, url: str, offset: int, cfg: DownloadCfg) -> requests.Response:
    # identity encoding: Range offsets and Content-Length then count the bytes we store.
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={offset}-"} if offset else {})
    resp = session.get(url, headers=headers, stream=True, timeout=(cfg.connect_timeout, cfg.read_timeout))
    status = f"HTTP {resp.status_code} {resp.reason}"
    if resp.status_code >= 500:
        resp.close()
        raise _Retryable(status)
    if resp.status_code >= 400 and resp.status_code != 416:
        resp.close()
        raise DownloadError(f"{url}: {status}; a client error, not retried")
    return resp


def _is_html(resp: requests.Response) -> bool:
    return resp.headers.get("Content-Type", "").startswith("text/html")


def _write_body(resp: requests.Response, part: Path, offset: int, cfg: DownloadCfg, limit: Limit,
                known: bool) -> bool:
    """Append the answer to `part`, or restart it when the server does not continue where `part` ends. True when
    the part is complete: the length the server announced, the expected size, or a confirming probe."""
    if resp.status_code == 416:  # nothing after `offset`: the part is complete, or longer than the file
        if resp.headers.get("Content-Range", "") == f"bytes */{offset}":
            return True
        part.unlink()
        raise _Retryable("the partial download is longer than the file; restarting")
    previous = None
    if offset and resp.status_code == 200:
        log(f"{resp.url}: the server ignored the Range request; restarting from byte 0")
        previous, offset = offset, 0
    elif offset and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
        part.unlink()
        raise _Retryable(f"the server resumed at {resp.headers.get('Content-Range')!r}, not byte {offset}")
    total = _announced(resp, offset)
    if total is not None and total > limit.bytes:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{resp.url}: the server announces {total} bytes, more than {limit.source}; refused")
    with open(part, "ab" if offset else "wb") as f, \
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=part.name.removesuffix(".part"), file=sys.stderr) as bar:
        written = offset
        for chunk in resp.iter_content(cfg.chunk_bytes):
            written += len(chunk)
            if written > limit.bytes:
                f.close()
                part.unlink()
                raise DownloadError(f"{resp.url}: the server sent more than {limit.source}; stopped there and "
                                    f"deleted the partial file")
            f.write(chunk)
            bar.update(len(chunk))
    if total is None and known:
        total = limit.bytes  # the expected size
    if total is not None:
        if written < total:
            raise _Retryable(f"the transfer ended at byte {written} of {total}")
        return True
    return previous is not None and written == previous  # two whole transfers agree


def _announced(resp: requests.Response, offset: int) -> Optional[int]:
    """The file's whole size as the answer states it (Content-Range's total, or offset + Content-Length)."""
    total = resp.headers.get("Content-Range", "").rpartition("/")[2]
    if total.isdigit():
        return int(total)
    length = resp.headers.get("Content-Length")
    return offset + int(length) if length is not None and length.isdigit() else None


class _FormParser(HTMLParser):
    """Collects the forms (action, hidden inputs) and the links of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), {}))
        elif tag == "input" and a.get("type") == "hidden" and self.forms and "name" in a:
            self.forms[-1][1][a["name"]] = a.get("value", "")
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])


def confirmation_url(html: str, page_url: str) -> Optional[str]:
    """The URL behind Google Drive's 'Download anyway' page, or None when the page has none.

    Current Drive: a GET form to drive.usercontent.google.com/download with hidden id, export, confirm and uuid.
    Older Drive: a link to /uc?export=download&confirm=TOKEN&id=ID.
    """
    parser = _FormParser()
    parser.feed(html)
    for action, inputs in parser.forms:
        if "confirm" in inputs:
            return f"{urljoin(page_url, action)}?{urlencode(inputs)}"
    for href in parser.links:
        if "confirm=" in href:
            return urljoin(page_url, href)
    return None
