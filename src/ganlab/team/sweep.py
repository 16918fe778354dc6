"""Sweeps across machines: one grid point per task of a SLURM job array (or per job of a CI matrix).

    ganlab sweep points -S train.seed=0,1 -S model.loss=bce,hinge
    ganlab sweep run NAME -S train.seed=0,1 -S model.loss=bce,hinge [--index I] [TARGET ...]
    ganlab sweep collect NAME [--out report.md]

A grid is the product of `-S key=v1,v2,...` (commas inside [...] belong to a value; the last -S varies fastest);
point I sets one value of each key. `run`, in a clone of the team's repository on the task's machine, pulls the
stage's inputs from the DVC remote, runs `dvc exp run -n NAME-I -S key=value ...` (logging to the tracking server
in tracking.uri / MLFLOW_TRACKING_URI) and `dvc exp push`es the experiment (git refs to the git remote, outputs to
the DVC remote). I defaults to SLURM_ARRAY_TASK_ID, else GANLAB_SWEEP_INDEX (a CI matrix). `collect` pulls every
NAME-* experiment from the git remote, shows them in one `dvc exp show`, and writes one report: each point's
settings and its variants' training metrics, beside the MLflow runs they logged. docs/slurm/sweep.sbatch and
docs/ci/github-sweep.yml run `run` on a cluster and on a hosted CI.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional


class SweepError(RuntimeError):
    """A bad grid or a failed step; the message says which and how to fix it."""


def split_values(raw: str) -> list[str]:
    """'0,1' -> ['0', '1']; '[0.5,0.9],[0.0,0.9]' -> ['[0.5,0.9]', '[0.0,0.9]']."""
    out, depth, cur = [], 0, ""
    for ch in raw:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch in "[{"
        depth -= ch in "]}"
        cur += ch
    out.append(cur)
    if any(not v.strip() for v in out) or depth:
        raise SweepError(f"-S ...={raw!r}: expected comma-separated values (lists in [...]), e.g. train.seed=0,1")
    return [v.strip() for v in out]


def grid(settings: list[str]) -> list[list[str]]:
    """Every point of the grid as its list of `key=value` overrides."""
    if not settings:
        raise SweepError("a sweep needs at least one -S key=v1,v2,... (e.g. -S train.seed=0,1)")
    axes = []
    for s in settings:
        key, eq, values = s.partition("=")
        if not eq or not key.strip():
            raise SweepError(f"-S {s!r}: expected key=v1,v2,... with a params.yaml key, e.g. model.loss=bce,hinge")
        axes.append([f"{key.strip()}={v}" for v in split_values(values)])
    return [list(p) for p in itertools.product(*axes)]


def task_index(given: Optional[int], n: int) -> int:
    raw = given if given is not None else os.environ.get("SLURM_ARRAY_TASK_ID", os.environ.get("GANLAB_SWEEP_INDEX"))
    if raw is None:
        raise SweepError("which grid point? pass --index, or run as a SLURM array task (SLURM_ARRAY_TASK_ID) or "
                         "with GANLAB_SWEEP_INDEX set")
    index = int(raw)
    if not 0 <= index < n:
        raise SweepError(f"grid point {index} does not exist: the grid has {n} points, 0..{n - 1}; submit the "
                         f"array as --array=0-{n - 1}")
    return index


def sh(cmd: list[str], cwd: Path, capture: bool = False) -> str:
    print(f"sweep: {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=cwd, text=True, stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        raise SweepError(f"`{' '.join(cmd)}` failed with status {proc.returncode} in {cwd}")
    return proc.stdout or ""


def run_point(name: str, settings: list[str], index: Optional[int], targets: list[str], remote: str,
              pull: bool, cwd: Path) -> str:
    points = grid(settings)
    i = task_index(index, len(points))
    exp = f"{name}-{i}"
    if pull:  # the stages' inputs (data) from the DVC remote, rather than recomputing them on every machine
        sh(["dvc", "pull", "--with-deps", *targets], cwd)
    sh(["dvc", "exp", "run", "-n", exp, *(a for s in points[i] for a in ("-S", s)), *targets], cwd)
    sh(["dvc", "exp", "push", remote, exp], cwd)
    print(f"sweep: point {i} of {len(points)} ({', '.join(points[i])}) is experiment {exp}, pushed to {remote}",
          file=sys.stderr)
    return exp


# --------------------------------------------------------------------------------------------------- collect
def _leaves(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}.{k}" if prefix else k))
    return out


def experiments(cwd: Path, name: str) -> list[dict[str, Any]]:
    """The NAME-* experiments of `dvc exp show --json`: name, commit, params (flat), the headline metrics DVC shows,
    and each variant's training summary (metrics/<variant>/train.json, committed in the experiment's commit)."""
    rows = []
    for base in json.loads(sh(["dvc", "exp", "show", "--json"], cwd, capture=True)):
        for e in base.get("experiments") or []:
            for r in e["revs"]:
                if (r.get("name") or "").startswith(f"{name}-") and r.get("data"):
                    d = r["data"]
                    rows.append({"name": r["name"], "rev": r["rev"],
                                 "params": _leaves(d.get("params", {}).get("params.yaml", {}).get("data", {})),
                                 "metrics": {k: v.get("data", {}) for k, v in (d.get("metrics") or {}).items()},
                                 "train": _train_summaries(cwd, r["rev"])})
    return sorted(rows, key=lambda r: int(r["name"].rsplit("-", 1)[1]) if r["name"].rsplit("-", 1)[1].isdigit()
                  else 0)


def _train_summaries(cwd: Path, rev: str) -> dict[str, dict[str, Any]]:
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "metrics/"], cwd=cwd, text=True,
                           capture_output=True, check=True).stdout.split()
    out = {}
    for f in files:
        parts = f.split("/")
        if len(parts) == 3 and parts[2] == "train.json":
            out[parts[1]] = json.loads(subprocess.run(["git", "show", f"{rev}:{f}"], cwd=cwd, text=True,
                                                      capture_output=True, check=True).stdout)
    return out


def report(name: str, rows: list[dict[str, Any]]) -> str:
    """Markdown: per experiment and variant, the params that differ between the points, the final losses and the
    MLflow run; then the headline metrics `dvc exp show` has (the evaluated experiments)."""
    keys = sorted({k for r in rows for k in r["params"]})
    varying = [k for k in keys if len({json.dumps(r["params"].get(k)) for r in rows}) > 1]
    lines = [f"# Sweep {name}: {len(rows)} experiments", "",
             "| experiment | " + " | ".join(varying) + " | variant | steps | d_loss | g_loss | D(x) | D(G(z)) | "
             "MLflow run |", "|---" * (len(varying) + 8) + "|"]
    for r in rows:
        vals = " | ".join(str(r["params"].get(k)) for k in varying)
        for variant, m in sorted(r["train"].items()):
            lines.append(f"| {r['name']} | {vals} | {variant} | {m.get('steps')} | "
                         + " | ".join(f"{m[k]:.4f}" if isinstance(m.get(k), (int, float)) else "-"
                                      for k in ("d_loss", "g_loss", "d_x", "d_gz")) + f" | {m.get('run_id')} |")
    headline = [(r["name"], f, k, v) for r in rows for f, m in sorted(r["metrics"].items())
                for k, v in sorted(_leaves(m).items()) if isinstance(v, (int, float))]
    if headline:
        lines += ["", "| experiment | file | metric | value |", "|---|---|---|---|"]
        lines += [f"| {n} | {f} | {k} | {v:.6g} |" for n, f, k, v in headline]
    return "\n".join(lines) + "\n"


def collect(name: str, remote: str, cwd: Path, out: Optional[Path]) -> list[dict[str, Any]]:
    listed = sh(["dvc", "exp", "list", remote, "--name-only"], cwd, capture=True).split()
    names = sorted(n for n in listed if n.startswith(f"{name}-"))
    if not names:
        raise SweepError(f"no experiment named {name}-* on {remote}: have the sweep's tasks finished and pushed? "
                         f"(`dvc exp list {remote}` shows what is there)")
    sh(["dvc", "exp", "pull", remote, *names], cwd)
    sh(["dvc", "exp", "show", "--no-pager"], cwd)
    rows = experiments(cwd, name)
    text = report(name, rows)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"sweep: report of {len(rows)} experiments in {out}", file=sys.stderr)
    else:
        print(text)
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="ganlab sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("points", help="list the grid's points")
    p.add_argument("-S", dest="settings", action="append", default=[])
    r = sub.add_parser("run", help="run and push one grid point")
    r.add_argument("name")
    r.add_argument("-S", dest="settings", action="append", default=[])
    r.add_argument("--index", type=int)
    r.add_argument("--remote", default="origin", help="the git remote experiments are pushed to")
    r.add_argument("--no-pull", dest="pull", action="store_false", help="do not `dvc pull` the inputs first")
    r.add_argument("targets", nargs="*", help="stages to run (default: the whole pipeline)")
    c = sub.add_parser("collect", help="pull a sweep's experiments and report them")
    c.add_argument("name")
    c.add_argument("--remote", default="origin")
    c.add_argument("--out", type=Path)
    args, extra = ap.parse_known_args(argv)  # stages may follow the -S options: `run NAME -S k=a,b train@x`
    if extra and (args.command != "run" or any(a.startswith("-") for a in extra)):
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.targets += extra
    try:
        if args.command == "points":
            points = grid(args.settings)
            for i, p in enumerate(points):
                print(f"{i}\t{' '.join(p)}")
            print(f"{len(points)} points: sbatch --array=0-{len(points) - 1} ...", file=sys.stderr)
        elif args.command == "run":
            run_point(args.name, args.settings, args.index, args.targets, args.remote, args.pull, Path.cwd())
        else:
            collect(args.name, args.remote, Path.cwd(), args.out)
    except SweepError as err:
        print(f"sweep {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
