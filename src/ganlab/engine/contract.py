"""The run's contract: what a training run writes and where, and the port through which the loop reports to the
outside world. Every stage that reads a run (evaluate, sample, the report, tracking) asks `RunPaths` where its files
are, so the layout of models/, metrics/, plots/, samples/ and checkpoints/ is spelt once, here (dvc.yaml's outs
spell the same folders; tests/test_pipeline.py runs them together)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ganlab.config import Variant

LOG_COLUMNS = ("step", "epoch", "d_loss", "d_real", "d_fake", "d_gp", "g_loss", "d_x", "d_gz")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


@dataclass(frozen=True)
class RunPaths:
    """Where one variant's run keeps its files. `root` is the project (or a DVC experiment's copy of it)."""

    name: str
    root: Path = Path(".")
    data_dir: Path = Path("data/processed")  # where <dataset>.h5 lives
    # One seed of a multi-seed run (train.seeds > 1): its files sit in a `seed_<s>` folder of each output, beside
    # its siblings'; None: the single run (train.seeds: 1), laid out as it always was.
    seed: Optional[int] = None

    @classmethod
    def for_variant(cls, name: str, root: Path = Path("."), data_dir: Path = Path("data/processed"),
                    seed: Optional[int] = None) -> "RunPaths":
        return cls(name, Path(root), Path(data_dir), seed)

    def for_seed(self, seed: int) -> "RunPaths":
        return RunPaths(self.name, self.root, self.data_dir, seed)

    def seed_runs(self, cfg: Variant) -> dict[int, "RunPaths"]:
        """{seed: its paths}: the variant's one run (train.seeds: 1), or each seed's folders."""
        if cfg.train.seeds == 1:
            return {cfg.train.seed: self}
        return {s: self.for_seed(s) for s in cfg.train.seed_list}

    def _sub(self, path: Path) -> Path:
        return path if self.seed is None else path / f"seed_{self.seed}"

    @property
    def models(self) -> Path:  # generator.pt, discriminator.pt (and a seed's train.json)
        return self._sub(self.root / "models" / self.name)

    @property
    def metrics(self) -> Path:  # train.json, eval.json, headline.json: the variant's, for all its seeds
        return self.root / "metrics" / self.name

    @property
    def plots(self) -> Path:  # losses.csv
        return self._sub(self.root / "plots" / self.name)

    @property
    def progress(self) -> Path:  # the fixed-noise grid of every epoch (and, for vectors, its samples as CSV)
        return self._sub(self.root / "samples" / self.name / "progress")

    @property
    def pictures(self) -> Path:  # the sample stage's pictures
        return self.root / "samples" / self.name / "sample"  # of the variant (a multi-seed run: its first seed)

    @property
    def checkpoints(self) -> Path:  # last.pt (persists across DVC runs so a killed run resumes)
        return self._sub(self.root / "checkpoints" / self.name)

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    def resume_copy(self, config: dict[str, Any]) -> Optional[Path]:
        """The checkpoint's copy that DVC never checks out (see ganlab.engine.checkpoint), one per variant and
        config, in the DVC project's untracked `.dvc/tmp` (DVC_ROOT: the project, also for a queued experiment's
        temporary copy); None outside a DVC project, where nothing overwrites last.pt."""
        base = Path(os.environ.get("DVC_ROOT") or self.root)
        if not (base / ".dvc").is_dir():
            return None
        key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        return base / ".dvc" / "tmp" / "ganlab" / "resume" / f"{self.name}-{key}.pt"

    @property
    def train_json(self) -> Path:  # a seed's own summary sits with its models; metrics/<v>/train.json lists them all
        return self.metrics / "train.json" if self.seed is None else self.models / "train.json"

    @property
    def eval_json(self) -> Path:  # the variant's (a multi-seed run's holds every seed's values)
        return self.metrics / "eval.json"

    @property
    def losses_csv(self) -> Path:
        return self.plots / "losses.csv"


class Tracker:
    """What the loop tells the outside world; the default does nothing. (MLflow plugs in here.)"""

    def start(self, cfg: Variant, resumed_run_id: Optional[str], total_steps: int = 0) -> Optional[str]:
        return None

    def log_rows(self, rows: list[dict[str, float]]) -> None: ...

    def log_grid(self, epoch: int, step: int, grid: np.ndarray) -> None: ...

    def log_outputs(self, paths: "RunPaths", cfg: Variant, data_shape: tuple[int, ...]) -> None: ...

    def end(self, metrics: dict[str, Any], status: str) -> None: ...
