"""Ctrl-C at a chosen point of a stage's code, not after a guessed time (tests/test_exp_resume.py).

With this folder on PYTHONPATH and GANLAB_SIGINT_AT=MODULE:ATTR:N set, the N-th call of ATTR (a function or
method, `ganlab.tracking.tracker:MlflowTracker.log_rows`) returns and then sends SIGINT to the process group, as
a terminal's Ctrl-C does: DVC and the stage it runs both receive it. Other Python processes are left alone (DVC
never imports MODULE).
"""

import importlib.abc
import os
import signal
import sys

_SPEC = os.environ.get("GANLAB_SIGINT_AT")


def _hook(module) -> None:
    *path, name = _SPEC.split(":")[1].split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part)
    original, calls, n = getattr(owner, name), [0], int(_SPEC.split(":")[2])

    def hooked(*args, **kwargs):
        result = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == n:
            os.killpg(os.getpgid(0), signal.SIGINT)
        return result

    setattr(owner, name, hooked)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _SPEC.split(":")[0]:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        exec_module = spec.loader.exec_module

        def exec_and_hook(module):
            exec_module(module)
            _hook(module)

        spec.loader.exec_module = exec_and_hook
        return spec


if _SPEC:
    import importlib.util

    sys.meta_path.insert(0, _Finder())
