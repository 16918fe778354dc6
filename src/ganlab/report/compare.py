"""`ganlab compare EXP_A EXP_B [EXP ...]`: is a difference between two experiments real?

The experiments are read through DVC (`dvc exp show --json` for their params and headline numbers, DVC's file
system at each experiment's commit for per-seed values, loss logs and grids): nothing is retrained, nothing in the
workspace is checked out or changed; `workspace` is the workspace. Experiments that differ only in `train.seed`
(queued the DVC way: `dvc exp run --queue -S train.seed=0,1,2`) form one arm, and every such sibling in the
listing joins the arm of an experiment named; a multi-seed experiment (train.seeds > 1) brings its seeds itself.
Each (variant, metric) gets the statistics of ganlab.report.stats and a verdict. Output: an HTML page (with the
grids and the loss curves of every seed), `--json`, and a table on the terminal.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ganlab.config import flatten
from ganlab.engine.contract import RunPaths
from ganlab.report import stats
from ganlab.report.exp_files import ExpFiles

EVALUATOR = ("eval.", "classifier.")  # params that change how a number is measured: such arms are incomparable
NOT_EVALUATOR = {"eval.device", "classifier.device"}
NOISE_FLOOR = Path("docs/studies/noise_floor.json")
CLASSIFIER = "models/classifier"  # the evaluator's weights (train_classifier): one set per comparison
SEED_KEYS = ("train.seed", "train.seeds")  # the global ones; a variant's own train.seed also differs per seed


class Incomparable(ValueError):
    """The experiments cannot be compared; the message says why and what to do."""


@dataclass
class Exp:
    name: str
    rev: Optional[str]  # None: the workspace
    params: dict[str, Any]  # params.yaml, flattened
    headline: dict[str, dict[str, Any]]  # variant -> its headline numbers

    @property
    def config(self) -> tuple:
        """What makes two experiments the same configuration: every param but the seeds (train.seed, train.seeds:
        three queued single-seed runs and one 3-seed run are the same three runs)."""
        return tuple(sorted((k, json.dumps(v)) for k, v in self.params.items() if k not in SEED_KEYS))


@dataclass
class Arm:
    label: str
    exps: list[Exp] = field(default_factory=list)

    cache: dict[str, dict] = field(default_factory=dict)

    def seeds(self, variant: str, repo: Path) -> dict[int, tuple[Exp, Optional[int], dict[str, Any]]]:
        """{seed: (its experiment, its seed folder or None, its headline numbers)}, one entry per seed."""
        if variant not in self.cache:
            self.cache[variant] = self._seeds(variant, repo)
        return self.cache[variant]

    def _seeds(self, variant: str, repo: Path) -> dict[int, tuple[Exp, Optional[int], dict[str, Any]]]:
        out: dict[int, tuple[Exp, Optional[int], dict[str, Any]]] = {}
        for e in self.exps:
            head = e.headline.get(variant)
            if not head:
                continue
            if "n_seeds" in head:  # a multi-seed run: its per-seed numbers are in eval.json
                doc = json.loads(read_text(repo, e.rev, RunPaths.for_variant(variant).eval_json) or "{}")
                for s, h in (doc.get("per_seed_headline") or {}).items():
                    out.setdefault(int(s), (e, int(s), h))
            else:
                seed = e.params.get("train.seed")  # the global override, else the variant's own
                seed = e.params.get(f"variants.{variant}.train.seed", 0) if seed is None else seed
                out.setdefault(int(seed), (e, None, head))
        return dict(sorted(out.items()))

    def failed(self, variant: str) -> int:
        return sum(int((e.headline.get(variant) or {}).get("n_failed") or 0) for e in self.exps)


def read_text(repo: Path, rev: Optional[str], path: Path) -> Optional[str]:
    """A file as the experiment has it (DVC-tracked or git-tracked), or None when it has none."""
    raw = _files(str(repo)).read_bytes(rev, path)
    return None if raw is None else raw.decode()


@lru_cache(maxsize=8)
def _files(repo: str) -> ExpFiles:
    return ExpFiles(Path(repo))


def experiments(repo: Path, all_commits: bool = False) -> dict[str, Exp]:
    """Every experiment `dvc exp show --json` lists, by name (and the baseline commits by branch and short rev)."""
    cmd = ["dvc", "exp", "show", "--json", "--no-fetch"] + (["--all-commits"] if all_commits else [])
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise Incomparable(f"`{' '.join(cmd)}` failed in {repo}: {proc.stderr.strip()[-400:]}")
    out: dict[str, Exp] = {}

    def add(entry: dict[str, Any], names: list[str]) -> None:
        data = entry.get("data") or {}
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        head: dict[str, dict[str, Any]] = {}
        for path, m in (data.get("metrics") or {}).items():
            if path.startswith("metrics/headline/"):
                head.update((m or {}).get("data") or {})
        rev = None if entry["rev"] == "workspace" else entry["rev"]
        e = Exp(names[0], rev, flatten(params), head)
        for n in names:
            out.setdefault(n, e)

    for commit in json.loads(proc.stdout):
        add(commit, [n for n in (commit.get("name"), commit["rev"], commit["rev"][:7]) if n])
        for group in commit.get("experiments") or []:
            for r in group.get("revs") or []:
                add(r, [n for n in (r.get("name") or group.get("name"), r["rev"], r["rev"][:7]) if n])
    return out


def arms(named: list[str], listing: dict[str, Exp]) -> tuple[Arm, Arm]:
    """Two arms from the named experiments: grouped by configuration (all params but train.seed), each joined by
    the listing's experiments of its configuration."""
    missing = [n for n in named if n not in listing]
    if missing:
        known = ", ".join(sorted({e.name for e in listing.values()}))
        raise Incomparable(f"no experiment named {', '.join(missing)} (`dvc exp show` lists: {known})")
    groups: dict[tuple, Arm] = {}
    for n in named:
        groups.setdefault(listing[n].config, Arm(n)).exps.append(listing[n])
    if len(groups) != 2:
        raise Incomparable(
            f"the experiments named make {len(groups)} configuration(s) (experiments that differ only in train.seed "
            f"are one arm); name experiments of exactly two configurations")
    for arm in groups.values():
        for e in {id(x): x for x in listing.values()}.values():
            if e.config == arm.exps[0].config and all(e.rev != x.rev for x in arm.exps):
                arm.exps.append(e)
    a, b = groups.values()
    return a, b


def differing(a: Arm, b: Arm) -> list[tuple[str, Any, Any]]:
    """The params that differ between the arms (the seeds aside); refuses a different evaluator."""
    pa, pb = a.exps[0].params, b.exps[0].params
    diff = [(k, pa.get(k), pb.get(k)) for k in sorted(set(pa) | set(pb))
            if k not in SEED_KEYS and pa.get(k) != pb.get(k)]
    judge = [d for d in diff if d[0].startswith(EVALUATOR) and d[0] not in NOT_EVALUATOR]
    if judge:
        raise Incomparable("the experiments measure differently, so their numbers cannot be compared: " + "; ".join(
            f"{k} is {va!r} in {a.label} and {vb!r} in {b.label}" for k, va, vb in judge)
            + ". Compare experiments run with the same evaluator (eval.*, classifier.*)")
    return diff


def same_classifier(a: Arm, b: Arm, repo: Path) -> None:
    """Refuses arms whose numbers of a variant were measured by different classifier weights: models/classifier
    (train_classifier's output) as each experiment's dvc.lock records it for `evaluate@<variant>`. Equal
    classifier.* params do not make equal weights: trained on another machine (another thread count, so another
    rounding) the same recipe gives another evaluator, which the params cannot show."""
    seen: dict[str, dict[str, str]] = {}  # variant -> {md5: the first experiment scored with it}
    for arm in (a, b):
        for e in arm.exps:
            for stage, md5 in _files(str(repo)).dep_md5s(e.rev, CLASSIFIER).items():
                v = stage.partition("@")[2]
                if stage.startswith("evaluate@") and v in e.headline:
                    seen.setdefault(v, {}).setdefault(md5, f"{e.name} ({arm.label})")
    clash = {v: found for v, found in seen.items() if len(found) > 1}
    if clash:
        raise Incomparable(
            "the experiments were scored by different classifiers, so their numbers cannot be compared: " + "; ".join(
                f"{v}: {CLASSIFIER} " + " against ".join(f"{md5.removesuffix('.dir')[:10]} in {name}"
                                                        for md5, name in found.items())
                for v, found in sorted(clash.items()))
            + f". The same classifier params train other weights on another machine (its thread count rounds "
            f"differently): score both with one {CLASSIFIER} (train it once and share it, `dvc push` / `dvc pull`), "
            f"then run their evaluate@ stages again")


def noise_floor(path: Path) -> Optional[dict[str, Any]]:
    return json.loads(path.read_text()) if path.exists() else None


def rows(a: Arm, b: Arm, repo: Path, floor: Optional[dict[str, Any]]) -> tuple[list[dict], list[str]]:
    """One row per (variant, metric) both arms measured; and a sentence per variant one arm lacks."""
    variants = sorted({v for e in a.exps + b.exps for v in e.headline})
    out, notes = [], []
    for v in variants:
        sa, sb = a.seeds(v, repo), b.seeds(v, repo)
        if not sa or not sb:
            notes.append(f"{v}: only {(a if sa else b).label} has it; nothing to compare")
            continue
        for metric, lower in stats.LOWER_IS_BETTER.items():
            va = [h[metric] for _, _, h in sa.values() if h.get(metric) is not None]
            vb = [h[metric] for _, _, h in sb.values() if h.get(metric) is not None]
            if not va or not vb:
                continue
            row = {"variant": v, "metric": metric, **stats.compare(va, vb, lower),
                   "failed": {"a": a.failed(v), "b": b.failed(v)}}
            if not row["judged"]:
                row["floor"] = floor_of(floor, v, metric)
            out.append(row)
    return out, notes


def floor_of(floor: Optional[dict[str, Any]], variant: str, metric: str) -> dict[str, Any]:
    """The variant's measured seed spread of `metric` (the committed noise-floor study), or why there is none."""
    if floor is None:
        return {"text": f"no noise-floor study ({NOISE_FLOOR} is absent), so the seed spread is unknown"}
    values = (floor.get(variant) or {}).get(metric)
    if not values:
        return {"text": f"the noise-floor study has no {metric} for {variant}"}
    v = np.asarray(values, dtype=float)
    if len(v) == 1:  # one value has no spread: saying "sd 0" would read as "seeds do not matter here"
        return {"sd": None, "lo": float(v[0]), "hi": float(v[0]), "n": 1,
                "text": f"the noise-floor study has one seed of {variant} ({metric} {v[0]:.4g}), so its seed spread "
                        f"is unknown"}
    return {"sd": float(v.std(ddof=1)), "lo": float(v.min()), "hi": float(v.max()), "n": len(v),
            "text": f"seed spread alone: {v.min():.4g} to {v.max():.4g} over {len(v)} seeds (sd {v.std(ddof=1):.3g})"}


def as_json(found: list[dict]) -> dict[str, Any]:
    keys = ("variant", "metric", "a", "b", "diff", "p_better", "verdict")
    return {"rows": [{k: r[k] for k in keys} for r in found]}


def table(found: list[dict], a: Arm, b: Arm) -> str:
    def iv(x: dict) -> str:
        return f"{x['mean']:.4g}" + (f" [{x['lo']:.4g}, {x['hi']:.4g}]" if x.get("lo") is not None else "")

    def names(arm: Arm) -> str:  # the experiments that brought numbers
        return ", ".join(e.name for e in arm.exps if e.headline)

    lines = [f"A = {a.label} ({names(a)}), B = {b.label} ({names(b)})",
             f"{'variant':<16} {'metric':<6} {'A (n)':<28} {'B (n)':<28} {'A - B':<28} {'P(A wins)':>8}  verdict"]
    for r in found:
        na, nb = r["a"]["n"], r["b"]["n"]
        verdict = {"a": "A better", "b": "B better"}.get(r["verdict"]) or (
            f"no detectable difference with {na}+{nb} seeds" if r["judged"] else "cannot judge (1 seed)")
        if r["judged"] and r["verdict"] == "none" and r["diff"]["mean"]:
            need = r["seeds_needed"]
            verdict += f" ({need} per arm would detect this size)" if need else " (this size needs > 1000 per arm)"
        if not r["judged"]:
            verdict += "; " + r["floor"]["text"]
        cells = (f"{iv(r['a'])} ({na})", f"{iv(r['b'])} ({nb})", iv(r["diff"]))
        lines.append(f"{r['variant']:<16} {r['metric']:<6} {cells[0]:<28} {cells[1]:<28} {cells[2]:<28} "
                     f"{r['p_better']:>8.2f}  {verdict}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="ganlab compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("experiments", nargs="+", help="names as `dvc exp show` lists them; `workspace` included")
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--out", type=Path, help="the page's folder (default reports/compare/<A>_vs_<B>)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON (no page, no table)")
    ap.add_argument("--all-commits", action="store_true", help="also list experiments of other commits")
    ap.add_argument("--noise-floor", type=Path, help=f"the seed-spread study (default <repo>/{NOISE_FLOOR})")
    args = ap.parse_args(argv)
    if len(args.experiments) < 2:
        ap.error("name at least two experiments (for example: ganlab compare workspace exp-lsgan)")
    try:
        return _compare(args)
    finally:
        _files(str(args.repo)).close()


def _compare(args: argparse.Namespace) -> int:
    try:
        a, b = arms(args.experiments, experiments(args.repo, args.all_commits))
        diff = differing(a, b)
        same_classifier(a, b, args.repo)
        found, notes = rows(a, b, args.repo, noise_floor(args.noise_floor or args.repo / NOISE_FLOOR))
    except Incomparable as err:
        print(f"ganlab compare: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(as_json(found), indent=2))
        return 0
    print(table(found, a, b))
    for n in notes:
        print(n)
    from ganlab.report.compare_page import write_page

    out = args.out or args.repo / "reports" / "compare" / f"{a.label}_vs_{b.label}"
    page = write_page(out, a, b, diff, found, notes, args.repo, _files(str(args.repo)))
    print(f"page: {page}")
    return 0
