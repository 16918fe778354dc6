"""The page of `ganlab compare`: the verdicts, the params that differ, and per variant each arm's last fixed-noise
grid of every seed and the loss curves of its seeds (mean and band), all read from the experiments through DVC
(the files of each experiment's own commit; the workspace's files for `workspace`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ganlab.engine.contract import RunPaths
from ganlab.figures import seed_bands
from ganlab.io import atomic_write
from ganlab.report import stats
from ganlab.report.exp_files import ExpFiles

TEMPLATES = Path(__file__).parent / "templates"


class Files:
    """Copies an experiment's files out (`ganlab.report.exp_files`: the commit's git objects and DVC's cache)."""

    def __init__(self, files: ExpFiles):
        self.files, self.repo = files, files.repo

    def last(self, rev: Optional[str], folder: Path, pattern: str) -> Optional[str]:
        """The last file name in `folder` matching `pattern` (epoch_*.png), or None."""
        names = [n for n in self.files.listdir(rev, folder) if Path(n).match(pattern)]
        return names[-1] if names else None

    def copy(self, rev: Optional[str], path: Path, dest: Path) -> Optional[Path]:
        raw = self.files.read_bytes(rev, path)
        if raw is None:
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(raw)
        return dest


def pictures(out: Path, arms: dict[str, Any], variants: list[str], files: Files) -> dict[str, dict]:
    """{variant: {"grids": {arm: [(seed, img path)]}, "curves": img path or None}}, files under out/img/."""
    repo, shown = files.repo, {}
    for v in variants:
        grids: dict[str, list[tuple[int, str]]] = {}
        csvs: dict[str, list[Path]] = {}
        for key, arm in arms.items():
            for seed, (exp, folder, _) in arm.seeds(v, repo).items():
                run = RunPaths.for_variant(v, Path("."), seed=folder)
                name = files.last(exp.rev, run.progress, "epoch_*.png")
                img = name and files.copy(exp.rev, run.progress / name, out / "img" / v / key / f"seed_{seed}.png")
                if img:
                    grids.setdefault(key, []).append((seed, str(img.relative_to(out))))
                csv = files.copy(exp.rev, run.losses_csv, out / "data" / v / key / f"seed_{seed}.csv")
                if csv:
                    csvs.setdefault(f"{key}: {arm.label}", []).append(csv)
        curves = None
        if csvs:
            curves = seed_bands(csvs, out / "img" / v / "losses.png", f"{v}: D (solid) and G (dashed) losses")
        shown[v] = {"grids": grids, "curves": str(curves.relative_to(out)) if curves else None}
    return shown


def write_page(out: Path, a: Any, b: Any, diff: list[tuple[str, Any, Any]], found: list[dict],
               notes: list[str], repo: Path, files: ExpFiles) -> Path:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    out.mkdir(parents=True, exist_ok=True)
    variants = sorted({r["variant"] for r in found})
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html.j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda x: "—" if x is None else f"{x:.4g}"
    html = env.get_template("compare.html.j2").render(
        a=a, b=b, diff=diff, rows=found, notes=notes, method=stats.METHOD, alpha=stats.ALPHA,
        pictures=pictures(out, {"A": a, "B": b}, variants, Files(files)), variants=variants,
        seeds={v: {"A": list(a.seeds(v, repo)), "B": list(b.seeds(v, repo))} for v in variants})
    page = out / "compare.html"
    atomic_write(page, html)
    return page
