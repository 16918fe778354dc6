"""Run a stage script and SIGKILL the process at a chosen point of its code, not after a guessed time.

    python tests/killer.py MODULE:ATTR N before|after [--set MODULE:NAME=VALUE]... -- SCRIPT ARGS...

ATTR is a function or method (`ganlab.tracking.tracker:MlflowTracker.log_rows`); on its N-th call the process kills
itself with SIGKILL, before calling it or right after it returns: what a power cut or `kill -9` leaves behind.
`--set` assigns a module constant first (an int or float literal).
"""

import importlib
import os
import runpy
import signal
import sys


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--")
    opts, script = argv[:split], argv[split + 1:]
    target, n, when = opts[0], int(opts[1]), opts[2]
    for i in range(3, len(opts), 2):
        assert opts[i] == "--set", opts
        where, value = opts[i + 1].split("=")
        mod, name = where.split(":")
        setattr(importlib.import_module(mod), name, float(value) if "." in value else int(value))
    mod, attr = target.split(":")
    owner = importlib.import_module(mod)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    original, calls = getattr(owner, name), [0]

    def hooked(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls[0] == n and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, hooked)
    sys.argv = script
    runpy.run_path(script[0], run_name="__main__")


if __name__ == "__main__":
    main()
