"""Seeds trained together against one seed: the wall time of S seeds of a variant in one joint run
(`ganlab.engine.joint.fit_joint`) over that of one seed (`fit`, the train stage's loop with its fastest step:
the hand-written one for the book's batch-1 variants), alternated round by round, each run in a fresh process.

    python bench/joint.py [--variants mnist_mlp:3000 mnist_cgan:3000 mnist_vanilla:300] [--seeds 5]
                          [--rounds 3] [--data-dir DIR]

`variant:steps` sets `train.max_steps`. A run's time is the `wall_time_s` its train.json reports (the training
loop with its logging, grids and checkpoints; data loading and start-up excluded), so `ratio` = joint / one is
"S seeds at the price of how many". Peak RSS is the child process's (`ru_maxrss`), start-up included. The
machine is shared: the load average is recorded, and only the ratios within a round count. Data: `mnist.h5` in
--data-dir, or when absent the tests' 4,000 real digits (tests/helpers.py). Writes bench/results/joint-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(variant: str, steps: int, seeds: int, data_dir: Path, root: Path) -> dict:
    """One run in this process: {"wall_s", "images_per_s" (per seed), "rss_mb"}."""
    from ganlab.config import load_params
    from ganlab.engine.contract import RunPaths, Tracker
    from ganlab.engine.joint import fit_joint
    from ganlab.engine.train import fit

    cfg = load_params(ROOT / "params.yaml").variant(variant)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": steps, "device": "cpu"})})
    paths = lambda s: RunPaths(f"{variant}/seed{s}", root, data_dir)  # noqa: E731
    if seeds == 1:
        m = fit(cfg, variant, paths(0))
    else:
        m = fit_joint(cfg, variant, list(range(seeds)), paths, lambda s: Tracker())[0]
    return {"wall_s": m["wall_time_s"], "images_per_s": m["images_per_s"],
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def agreement(variants: list[str], step_counts: list[int], data_dir: Path, work: Path) -> dict:
    """Seed 1 of a 2-seed joint run against `fit` with train.seed 1, after each of `step_counts` steps, in fp32 and
    fp64: the largest absolute difference over G's and D's weights, and that over the largest weight (relative).
    Both on one thread; in fp32 also the control, `fit` on two threads against one (the same maths, its products
    split differently: an ordinary change of rounding), so the joint run's distance reads against what any change
    of rounding does to that variant over as many steps."""
    from ganlab.config import load_params
    from ganlab.engine.contract import RunPaths, Tracker
    from ganlab.engine.joint import fit_joint, seed_config
    from ganlab.engine.train import fit

    out = {}
    for v, steps, prec in ((v, n, p) for v in variants for n in step_counts for p in ("fp32", "fp64")):
        base = load_params(ROOT / "params.yaml").variant(v)
        cfg = lambda threads: base.model_copy(update={"train": base.train.model_copy(update={  # noqa: E731
            "max_steps": steps, "device": "cpu", "precision": prec, "threads": threads})})
        root = Path(tempfile.mkdtemp(dir=work))
        paths = lambda s, r: RunPaths(f"{v}/seed{s}", root / r, data_dir)  # noqa: E731
        fit_joint(cfg(1), v, [0, 1], lambda s: paths(s, "joint"), lambda s: Tracker())
        fit(seed_config(cfg(1), 1), v, paths(1, "one"))
        row = {"steps": steps, **weight_distance(paths(1, "joint"), paths(1, "one"))}
        line = f"{v} {prec} {steps} steps: |joint - one| {row['relative']:.3g} of the largest weight"
        if prec == "fp32":
            fit(seed_config(cfg(2), 1), v, paths(1, "two_threads"))
            row["control_two_threads"] = weight_distance(paths(1, "two_threads"), paths(1, "one"))
            line += f"; |two threads - one| {row['control_two_threads']['relative']:.3g}"
        out[f"{v} {prec}" + (f" {steps}" if len(step_counts) > 1 else "")] = row
        print(line, flush=True)
    return out


def weight_distance(a: "RunPaths", b: "RunPaths") -> dict:
    """The largest |a - b| over G's and D's saved weights, absolute and over b's largest weight, and how many
    weights differ by more than 1e-4."""
    import torch

    diff = scale = 0.0
    over = 0
    for net in ("generator.pt", "discriminator.pt"):
        wa, wb = torch.load(a.models / net), torch.load(b.models / net)
        for k in wa:
            d = (wa[k].double() - wb[k].double()).abs()
            diff, over = max(diff, d.max().item()), over + int((d > 1e-4).sum())
            scale = max(scale, wb[k].double().abs().max().item())
    return {"max_abs_diff": diff, "relative": diff / scale, "n_over_1e-4": over}


def run_child(variant: str, steps: int, seeds: int, data_dir: Path, work: Path) -> dict:
    root = Path(tempfile.mkdtemp(dir=work))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, __file__, "--child", variant, str(steps), str(seeds), str(data_dir),
                          str(root)], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def data(data_dir: Path | None, work: Path) -> Path:
    if data_dir is not None:
        if not (data_dir / "mnist.h5").exists():
            sys.exit(f"joint: {data_dir / 'mnist.h5'} is missing; run `dvc repro download_mnist` or leave out "
                     f"--data-dir (the tests' 4,000 digits)")
        return data_dir
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import write_mnist_h5

    from ganlab.config import load_params
    from ganlab.data.toy import make_toy

    write_mnist_h5(work / "mnist.h5")
    make_toy(load_params(ROOT / "params.yaml").data.toy, work)
    return work


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["mnist_mlp:3000", "mnist_cgan:3000", "mnist_vanilla:300"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--agreement", type=int, nargs="+", metavar="STEPS",
                    help="instead of timing: seed 1 jointly vs alone after STEPS steps (each count given), fp32 "
                         "and fp64, with fp32's two-threads control")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        v, steps, seeds, d, root = args.child
        print(json.dumps(child(v, int(steps), int(seeds), Path(d), Path(root))))
        return
    if args.agreement:
        with tempfile.TemporaryDirectory() as tmp:
            found = agreement([v.split(":")[0] for v in args.variants], args.agreement,
                              data(args.data_dir, Path(tmp)), Path(tmp))
        out = args.out or ROOT / "bench/results/joint-agreement.json"
        out.write_text(json.dumps(found, indent=2) + "\n")
        print(f"wrote {out}")
        return
    load = [os.getloadavg()]
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = data(args.data_dir, Path(tmp))
        for r in range(args.rounds):
            for spec in args.variants:
                v, steps = spec.split(":")
                one = run_child(v, int(steps), 1, d, Path(tmp))
                many = run_child(v, int(steps), args.seeds, d, Path(tmp))
                row = {"one_s": one["wall_s"], "joint_s": many["wall_s"], "ratio": many["wall_s"] / one["wall_s"],
                       "one_rss_mb": one["rss_mb"], "joint_rss_mb": many["rss_mb"],
                       "one_images_per_s": one["images_per_s"],
                       "joint_images_per_s": many["images_per_s"] * args.seeds}
                results.setdefault(v, []).append(row)
                print(f"round {r + 1} {v}: " + ", ".join(f"{k} {x:.2f}" for k, x in row.items()), flush=True)
            load.append(os.getloadavg())
    summary = {v: {k: {"median": statistics.median(x[k] for x in rows), "min": min(x[k] for x in rows),
                       "max": max(x[k] for x in rows)} for k in rows[0]} for v, rows in results.items()}
    print(f"\n| variant | 1 seed s | {args.seeds} seeds jointly s | ratio (target: 1.5 batch 1, 2.5 vanilla) | "
          f"peak RSS 1 / {args.seeds} seeds MB |\n|---|---|---|---|---|")
    for v, s in summary.items():
        cell = lambda k, f=".1f": f"{s[k]['median']:{f}} ({s[k]['min']:{f}}–{s[k]['max']:{f}})"  # noqa: E731
        print(f"| {v} | {cell('one_s')} | {cell('joint_s')} | {cell('ratio', '.2f')} | "
              f"{s['one_rss_mb']['median']:.0f} / {s['joint_rss_mb']['median']:.0f} |")
    out = args.out or ROOT / "bench/results" / f"joint-{platform.node() or 'cpu'}.json"
    out.write_text(json.dumps({"seeds": args.seeds, "rounds": args.rounds, "variants": args.variants,
                               "load_average_per_round": load, "rounds_by_variant": results,
                               "summary": summary}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
