"""Checkpoints: `checkpoints/<variant>/last.pt` holds everything a killed run needs to go on exactly where it was.

It holds G, D, both optimisers, the three RNG states, the resolved config and the run's `Progress`, as tensors
and plain values only (numbers, strings, lists, dicts), so it loads with `torch.load(weights_only=True)`: a
planted `last.pt` can at worst hold wrong numbers for this config, never run code. A file that is not such a
checkpoint (pickled objects, truncated, garbage, missing keys) is an error naming the file, never ignored.

A checkpoint is in one of three states, and `resume` acts on each:
- running (`complete` false): the loop saved it every `train.checkpoint_every` steps; training goes on from it;
- complete: every step ran and the summary metrics are in it, but the outputs or the MLflow run may not be
  finished (a kill while logging); the next run writes the outputs and finishes the MLflow run, without training;
- finished: the outputs are written and the MLflow run ended; the next run (DVC runs the stage again because a
  dependency changed) trains from scratch, as does a checkpoint of another config.

Every save also writes a copy outside DVC's outputs (`RunPaths.resume_copy`, keyed by the config): `dvc exp run`
checks out the baseline's `last.pt` before the stage starts, which would lose an interrupted experiment's
progress; `resume` takes whichever of the two is further along. A finished run deletes its copy.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ganlab.io import BadFile, atomic_path, atomic_torch_save, bad_file, load_tensors

if TYPE_CHECKING:
    from ganlab.engine.gan import GAN

FORMAT = 2  # 1: pickled numpy grids, loaded with weights_only=False (refused now)
KEYS = {"format", "G", "D", "opt_g", "opt_d", "rng", "torch_rng", "cuda_rng", "config", "progress"}


class CheckpointError(BadFile):
    """A checkpoint that cannot be used; the message names it and says how to start over."""


@dataclass
class Progress:
    """Everything besides the models and optimisers that a resumed run needs."""

    step: int = 0
    epoch: int = 0
    perm: Optional[Tensor] = None  # this epoch's order
    rows: list[dict[str, float]] = field(default_factory=list)
    grids: dict[int, np.ndarray] = field(default_factory=dict)
    samples: dict[int, list[list[float]]] = field(default_factory=dict)  # vector data: the fixed-noise samples
    wall_s: float = 0.0  # training time of all segments so far (a killed segment counts up to its checkpoint)
    run_id: Optional[str] = None
    complete: bool = False  # every step ran; `metrics` holds the summary
    finished: bool = False  # outputs written and the MLflow run ended
    metrics: Optional[dict[str, Any]] = None
    clock: Optional[float] = field(default=None, repr=False)  # perf_counter() - wall_s while training; not saved

    def start_clock(self) -> None:
        self.clock = time.perf_counter() - self.wall_s

    def read_clock(self) -> None:
        if self.clock is not None:
            self.wall_s = time.perf_counter() - self.clock

    def stop_clock(self) -> None:
        self.read_clock()
        self.clock = None


SAVED = [f.name for f in fields(Progress) if f.name != "clock"]


def save(paths: Sequence[Path], gan: "GAN", prog: Progress) -> None:
    """Write the checkpoint atomically to each of `paths` (the DVC output, then its copies): a kill leaves the
    previous one or this one, whole. A finished run's copies are deleted: nothing is left to resume."""
    prog.read_clock()
    p = {k: getattr(prog, k) for k in SAVED}
    p["perm"] = None if prog.perm is None else prog.perm.cpu()
    p["grids"] = {e: torch.from_numpy(np.ascontiguousarray(g)) for e, g in prog.grids.items()}
    state = {"format": FORMAT, "G": gan.G.state_dict(), "D": gan.D.state_dict(), "opt_g": gan.opt_g.state_dict(),
             "opt_d": gan.opt_d.state_dict(), "rng": gan.rng.get_state(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
             "config": gan.cfg.model_dump(mode="json"), "progress": p}
    atomic_torch_save(state, paths[0])
    for copy in paths[1:]:
        if prog.finished:
            copy.unlink(missing_ok=True)
        else:
            with atomic_path(copy) as tmp:
                shutil.copyfile(paths[0], tmp)


def rebuild_hint(path: Path) -> str:
    path = Path(path)  # checkpoints/<variant>/last.pt, or a copy <variant>-<config hash>.pt
    variant = path.parent.name if path.name == "last.pt" else path.stem.rsplit("-", 1)[0]
    return f"rm {path} && dvc repro train@{variant}"  # training then starts from step 0


def load(path: Path) -> Optional[dict[str, Any]]:
    """The checkpoint's contents (on the CPU) after `validate`, or None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = load_tensors(path, rebuild_hint(path))
    except BadFile as err:
        raise CheckpointError(str(err)) from None
    validate(state, path)
    return state


def validate(state: Any, path: Path) -> None:
    """Refuse anything but a ganlab checkpoint of this format: the keys, and the types `Progress` needs."""
    def fail(what: str) -> CheckpointError:
        return CheckpointError(str(bad_file(path, f"not a ganlab checkpoint: {what}", rebuild_hint(path))))

    if not isinstance(state, dict) or not KEYS <= set(state):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise fail(f"expected the keys {sorted(KEYS)}, found {found}")
    if state["format"] != FORMAT:
        raise fail(f"format {state['format']!r}, this ganlab writes format {FORMAT}")
    p = state["progress"]
    if not isinstance(p, dict) or set(p) != set(SAVED):
        raise fail(f"its progress has the keys {sorted(p) if isinstance(p, dict) else p!r}, expected {SAVED}")
    types = {"step": int, "epoch": int, "rows": list, "grids": dict, "samples": dict, "wall_s": (int, float),
             "complete": bool, "finished": bool}
    for key, kind in types.items():
        if not isinstance(p[key], kind) or (kind is int and p[key] < 0):
            raise fail(f"progress.{key} is {p[key]!r}")
    if not all(isinstance(t, Tensor) for t in [state["rng"], state["torch_rng"], *p["grids"].values()]):
        raise fail("its RNG states and grids must be tensors")
    if p["perm"] is not None and not isinstance(p["perm"], Tensor):
        raise fail("progress.perm must be a tensor")
    if p["complete"] and not isinstance(p["metrics"], dict):
        raise fail("it is marked complete but holds no summary metrics")


def resume(paths: Sequence[Path], gan: "GAN", keep_finished: bool = False) -> Optional[Progress]:
    """The progress of a running or complete run of this same config, its state restored into `gan`, from the
    furthest of `paths`; None when there is no checkpoint, it is of another config, or its run finished (start
    from scratch) -- unless `keep_finished`: a seed of a multi-seed stage that was killed after that seed finished
    is not trained again."""
    config = gan.cfg.model_dump(mode="json")
    found = [(s, p) for p in paths if (s := load(p)) is not None and s["config"] == config
             and (keep_finished or not s["progress"]["finished"])]
    if not found:
        return None
    state, path = max(found, key=lambda sp: (sp[0]["progress"]["complete"], sp[0]["progress"]["step"]))
    try:
        gan.G.load_state_dict(state["G"])
        gan.D.load_state_dict(state["D"])
        gan.opt_g.load_state_dict(state["opt_g"])
        gan.opt_d.load_state_dict(state["opt_d"])
        gan.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise CheckpointError(str(bad_file(path, f"does not fit this config's networks ({err})".splitlines()[0],
                                           rebuild_hint(path)))) from None
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    p = dict(state["progress"])
    p["perm"] = None if p["perm"] is None else p["perm"].to(gan.rng.device)
    p["grids"] = {int(e): g.numpy() for e, g in p["grids"].items()}
    return Progress(**p)


def announce(name: str, prog: Progress, total: int, path: Path) -> None:
    if prog.complete:
        print(f"{name}: training finished before ({prog.step} steps, {path}); writing its outputs and finishing "
              f"its MLflow run, without training again", file=sys.stderr)
    elif prog.step:
        print(f"{name}: resuming from step {prog.step} of {total} ({path})", file=sys.stderr)
