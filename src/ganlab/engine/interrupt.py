"""Ctrl-C as a user expects it: the loop stops after the step it is in, saves a checkpoint there, and the stage
prints one line (where it stopped, the command that resumes) instead of a traceback.

The first SIGINT (or SIGTERM: `dvc queue kill`) only raises a flag; the loop checks it after each step, so the
checkpoint holds a whole step, never half an optimiser update. A second signal stops at once (KeyboardInterrupt).
Under DVC the signal reaches the whole process group; DVC itself ignores SIGINT while a stage runs.
"""

from __future__ import annotations

import os
import shlex
import signal
from pathlib import Path
from typing import Optional

_asked: list[int] = []  # the signals received so far


class Stopped(Exception):
    """The user stopped the run; a checkpoint at `step` was saved."""

    def __init__(self, step: int, total: int, checkpoint: Path):
        super().__init__(f"stopped at step {step} of {total}")
        self.step, self.total, self.checkpoint = step, total, checkpoint


def _handler(signum, frame):
    _asked.append(signum)
    if len(_asked) > 1:  # asked twice: stop now, wherever the loop is
        raise KeyboardInterrupt(f"signal {signum}")


def _at_once(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def install(graceful: bool = True) -> None:
    """Stop gracefully on SIGINT and SIGTERM (main thread only, as Python's signal module requires). A
    data-parallel rank stops at once instead (`graceful` False): the ranks would see the flag at different steps
    and wait for each other forever; SIGTERM then ends the MLflow run as KILLED, and `last.pt` is the last
    periodic checkpoint."""
    _asked.clear()
    signal.signal(signal.SIGINT, _handler if graceful else signal.default_int_handler)
    signal.signal(signal.SIGTERM, _handler if graceful else _at_once)


def stop_requested() -> bool:
    return bool(_asked)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _parent(pid: int) -> int:
    try:  # field 4 of /proc/<pid>/stat; the name (field 2) may hold spaces but ends at the last ')'
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def dvc_command(pid: Optional[int] = None) -> Optional[str]:
    """The `dvc repro ...` or `dvc exp run ...` command that started this process, read from its ancestors."""
    pid = os.getppid() if pid is None else pid
    while pid > 1:
        argv = _cmdline(pid)
        for i, arg in enumerate(argv):
            what = argv[i + 1:i + 3]
            if os.path.basename(arg) == "dvc" and (what[:1] == ["repro"] or what == ["exp", "run"]):
                return shlex.join(["dvc", *argv[i + 1:]])
        pid = _parent(pid)
    return None


def resume_hint(variant: str) -> str:
    """What to type to go on: the same DVC command when DVC started us, else the stage's own repro."""
    return dvc_command() or f"dvc repro train@{variant}"
