"""Files: one way to write them, and one way to read the ones that may come from elsewhere.

Writing: `atomic_write` (bytes or text) and `atomic_path` (a temporary path for writers that want a file name:
h5py, torch.save, Pillow, matplotlib). The data goes to a temporary file in the target's folder, is fsync'ed and
renamed over the target with os.replace, and the folder is fsync'ed: a reader sees the old file or the whole new
one, never half of one, also after a crash. A temporary is named `<target>.ganlab-tmp-<host>-<pid>.<random>` and
created by `tempfile.mkstemp` (O_CREAT|O_EXCL|O_NOFOLLOW): a file or link planted in a shared folder under a name the
writer might use is never opened or followed, since the name is not predictable and creation fails on anything
that exists. A process killed with SIGKILL cannot delete its own, so every write first deletes the temporaries of
the same target left by dead processes of this host (never those of a live process, of another host, or files not
named so).

Reading: checkpoints, models, data sets, logs and metrics can be planted, truncated or garbage (a shared disk, a
`dvc pull`, a copied experiment, a crash). Tensors load with `torch.load(weights_only=True)` only, which refuses
pickled code without running it, and every problem is a `BadFile` whose one line names the file, what is wrong
and the command that rebuilds it.
"""

from __future__ import annotations

import glob
import io
import json
import os
import pickle
import re
import socket
import stat
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

TMP_MARK = ".ganlab-tmp-"


class BadFile(Exception):
    """A file is truncated, garbage, or not what it should be; the message names it, says what is wrong and what
    to run to rebuild it. Stages print it as one line."""


def bad_file(path: Path, what: str, rebuild: Optional[str] = None) -> BadFile:
    return BadFile(f"{path}: {what}; rebuild it with `{rebuild or rebuild_command(path)}`")


def rebuild_command(path: Path) -> str:
    """The command that writes a file of the pipeline, from where it lives (dvc.yaml's outputs)."""
    p = Path(path)
    parent, top = p.parent.name, p.parent.parent.name
    if p.suffix == ".h5":
        return {"mnist": "dvc repro download_mnist", "pattern_1010": "dvc repro make_toy",
                "gaussian_2d": "dvc repro make_toy"}.get(p.stem, "dvc repro pack_celeba")
    if parent == "classifier" or p.name == "classifier.json":
        return "dvc repro train_classifier"
    if p.name == "eval.json":
        return f"dvc repro evaluate@{parent}"
    if parent == "progress":  # samples/<v>/progress/
        return f"dvc repro train@{top}"
    if top in ("models", "metrics", "plots", "checkpoints"):
        return f"dvc repro train@{parent}"
    return "dvc repro"


# --------------------------------------------------------------------------------------------------- writing
def alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie, a child that exited unreaped, is gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(pid, 0) succeeded, so it exists


def temp_path(dest: Path) -> Path:
    """Create a new empty temporary file next to `dest`, `<dest>.ganlab-tmp-<host>-<pid>.<8 random chars>`, and
    return its path. mkstemp opens it with O_CREAT|O_EXCL|O_NOFOLLOW, so a link or file planted in the folder is
    never written through, and the random part means no one can plant one under the name in advance. mkstemp makes
    it 0600; it gets the mode a plain open() would give (0666 less the umask), so outputs stay readable by others."""
    fd, name = tempfile.mkstemp(prefix=f"{dest.name}{TMP_MARK}{socket.gethostname()}-{os.getpid()}.",
                                dir=dest.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(name)


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask sets it, a race with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def clean_stale_temps(dest: Path) -> list[Path]:
    """Delete the temporaries of `dest` left by dead processes of this host; returns what was deleted. The names
    of earlier versions (no random part) are recognised too."""
    pattern = re.compile(re.escape(dest.name + TMP_MARK) + r"(?P<host>.+)-(?P<pid>\d+)(?:\.[a-z0-9_]+)?")
    removed = []
    for p in dest.parent.glob(glob.escape(dest.name + TMP_MARK) + "*"):
        m = pattern.fullmatch(p.name)
        if m and m["host"] == socket.gethostname() and not alive(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed.append(p)
            print(f"{p}: removed, a temporary left by process {m['pid']}, which no longer runs", file=sys.stderr)
    return removed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, dest: Path) -> None:
    """Make a whole written file `tmp` the file `dest`: fsync it, rename it over `dest`, fsync the folder."""
    _fsync(tmp)
    os.replace(tmp, dest)
    _fsync(dest.parent)


@contextmanager
def atomic_path(dest: Union[str, Path]) -> Iterator[Path]:
    """A temporary path next to `dest` to write to (an empty file, created unpredictably and exclusively: see
    `temp_path`); on success it replaces `dest` (fsync'ed), on failure it is deleted and `dest` is left as it was."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(dest)
    tmp = temp_path(dest)
    try:
        yield tmp
        commit(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_file(dest: Union[str, Path]) -> Iterator[Any]:
    """A binary file to write `dest`'s new content to (`atomic_path`'s temporary, opened without following a
    link planted at its name)."""
    with atomic_path(dest) as tmp, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_NOFOLLOW), "wb") as f:
        yield f


def atomic_write(dest: Union[str, Path], data: Union[str, bytes]) -> Path:
    """Write `data` (text is UTF-8) to `dest` atomically."""
    with atomic_file(dest) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(dest)


def atomic_torch_save(obj: Any, dest: Union[str, Path]) -> Path:
    """torch.save to `dest` atomically, the same bytes for the same tensors: saved through an open file (torch
    names the archive's folder after a path it is given, here the random temporary one, so every save of the same
    weights had other bytes and DVC saw a changed output, rerunning every stage after it)."""
    import torch

    with atomic_file(dest) as f:
        torch.save(obj, f)
    return Path(dest)


# --------------------------------------------------------------------------------------------------- reading
def load_tensors(path: Path, rebuild: Optional[str] = None) -> Any:
    """A file of tensors and plain values (dicts, lists, numbers, strings), on the CPU. Pickled objects of any
    other kind are refused before anything in them runs."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `{rebuild or rebuild_command(path)}`")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol ..." on foreign files
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))  # "Unsupported global: GLOBAL x", "... GLOBAL x whose"
        if found:
            raise bad_file(path, f"refused: it holds pickled Python objects (it names {found[1]}), not only tensors "
                           f"and plain values, and loading those could run code; nothing in it was run",
                           rebuild) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        raise bad_file(path, f"not a readable PyTorch file, truncated or garbage "
                       f"({detail[1] if detail else _first_line(err)}); nothing in it was run", rebuild) from None
    except Exception as err:  # truncated zip, garbage bytes: RuntimeError, KeyError, EOFError, ...
        raise bad_file(path, f"not a readable PyTorch file, truncated or garbage ({type(err).__name__}: "
                       f"{_first_line(err)})", rebuild) from None


def load_state_dict(module: Any, path: Path, rebuild: Optional[str] = None) -> None:
    """Load a state dict file into `module`, refusing pickled code and naming the file when it does not fit."""
    state = load_tensors(path, rebuild)
    if not isinstance(state, dict):
        raise bad_file(path, f"holds a {type(state).__name__}, not a state dict", rebuild)
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as err:
        raise bad_file(path, f"does not fit the network of this config ({_first_line(err)})", rebuild) from None


def read_json(path: Path, rebuild: Optional[str] = None) -> dict[str, Any]:
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing; run `{rebuild or rebuild_command(path)}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_file(path, f"not valid JSON, truncated or garbage ({_first_line(err)})", rebuild) from None
    if not isinstance(value, dict):
        raise bad_file(path, f"holds a JSON {type(value).__name__}, not an object", rebuild)
    return value


def read_table(path: Path, columns: Sequence[str], rebuild: Optional[str] = None) -> Any:
    """A CSV with (at least) these columns, all numeric (empty or `nan` cells are NaN), as a pandas DataFrame."""
    import pandas as pd

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing; run `{rebuild or rebuild_command(path)}`") from None
    except UnicodeDecodeError as err:
        raise bad_file(path, f"not a text file ({_first_line(err)})", rebuild) from None
    lines = text.splitlines()
    if not text.endswith("\n"):
        raise bad_file(path, "truncated: the last line is cut off", rebuild)
    header = lines[0].split(",") if lines else []
    if not set(columns) <= set(header):
        raise bad_file(path, f"its header lacks {', '.join(c for c in columns if c not in header)}", rebuild)
    for i, line in enumerate(lines[1:], 2):
        if line.count(",") != len(header) - 1:
            raise bad_file(path, f"line {i} has {line.count(',') + 1} values, expected {len(header)}", rebuild)
    frame = pd.read_csv(io.StringIO(text))
    for c in columns:
        if not pd.api.types.is_numeric_dtype(frame[c]):
            raise bad_file(path, f"column {c} holds values that are not numbers", rebuild)
    if frame.empty:
        raise bad_file(path, "holds no rows", rebuild)
    return frame


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path: Path, root: Path, max_bytes: int, rebuild: Optional[str] = None) -> bytes:
    """The bytes of a PNG the pipeline wrote under `root`, for copying on (the report, which MLflow uploads). A
    planted link to a file elsewhere (~/.ssh/id_rsa, /etc/passwd), a device or fifo, a file that is not a PNG or
    one larger than `max_bytes` is refused by name, before anything is read from it. A link that stays inside
    `root` (DVC's symlink cache under .dvc/cache) is followed."""
    path = Path(path)
    real, inside = path.resolve(), Path(root).resolve()
    if not real.is_relative_to(inside):
        raise bad_file(path, f"refused: it leads outside the project (to {real}), and the report copies only "
                       f"the pipeline's own pictures; remove it", rebuild)
    st = real.stat()
    if not stat.S_ISREG(st.st_mode):
        raise bad_file(path, "refused: not a regular file; remove it", rebuild)
    if st.st_size > max_bytes:
        raise bad_file(path, f"refused: {st.st_size:,} bytes, more than the {max_bytes:,} a picture of the "
                       f"pipeline takes", rebuild)
    with open(real, "rb") as f:
        data = f.read(max_bytes + 1)
    if not data.startswith(PNG_SIGNATURE) or len(data) > max_bytes:
        raise bad_file(path, "refused: not a PNG (no PNG signature)" if not data.startswith(PNG_SIGNATURE)
                       else "refused: it grew while read", rebuild)
    return data


def h5_error(path: Path, err: Exception, expected: Optional[str] = None) -> BadFile:
    """The error for an HDF5 file h5py cannot read (OSError) or that lacks a dataset (KeyError)."""
    if isinstance(err, KeyError):
        return bad_file(path, f"lacks {expected or 'a dataset it should hold'} ({_first_line(err)})")
    return bad_file(path, f"not a readable HDF5 file, truncated or garbage ({_first_line(err)})")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
