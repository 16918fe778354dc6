"""Book mode as a user meets it: the `images_per_s` that `train@<variant>` writes to its train.json (logging,
MLflow, grids and checkpoints included), alternated with the book's own loop over its pandas Dataset, on the same
digits, each in a fresh process.

    python bench/book_stage.py [--variants mnist_mlp mnist_cgan] [--steps 3000] [--rounds 3]
                               [--data-dir data/processed]

Per round and variant: the stage (`python stages/train.py <variant>` with `train.max_steps: <steps>`, its MLflow
store in a temporary folder), then the book loop (bench/baselines/book_loop.py: notebook 08's, or notebook 16's
for mnist_cgan) with torch's default thread count, then the book loop on one thread. The ratio of a round is the
stage's figure over the faster book loop of that round; the summary gives their median, min and max. Needs
data/processed/mnist.h5 (`dvc repro download_mnist`). Writes bench/results/book_stage-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK_RUNS = {0: "book loop", 1: "book loop, 1 thread", 2: "book loop, 2 threads"}


def book_loop(variant: str, steps: int, threads: int, data_dir: Path) -> float:
    """Images/s of the book's loop over the first `steps` training digits (run in a child process)."""
    import h5py
    import pandas
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from baselines import book_loop as book

    if threads:
        torch.set_num_threads(threads)
    with h5py.File(data_dir / "mnist.h5") as f:
        x, y = f["train/images"][:steps].reshape(-1, 784), f["train/labels"][:steps]
    frame = pandas.DataFrame(x.astype("int64"))
    frame.insert(0, "label", y)
    dataset = book.MnistDataset(frame)
    cgan = variant == "mnist_cgan"
    D = book.ConditionalDiscriminator() if cgan else book.Discriminator()
    G = book.ConditionalGenerator() if cgan else book.Generator()
    t0 = time.perf_counter()
    seen = (book.train_cgan if cgan else book.train_gan)(D, G, dataset, limit=steps)
    return seen / (time.perf_counter() - t0)


def stage(variant: str, steps: int, data_dir: Path, work: Path) -> float:
    """The train stage's own images/s for `steps` steps of the variant (a fresh root each time)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["max_steps"] = steps
    root = Path(tempfile.mkdtemp(dir=work))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
                        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(ROOT / "stages/train.py"), variant, "--params", str(root / "params.yaml"),
                    "--data-dir", str(data_dir), "--root", str(root)], check=True, env=env, cwd=root,
                   stderr=subprocess.DEVNULL)
    return json.loads((root / "metrics" / variant / "train.json").read_text())["images_per_s"]


def child(args: list[str]) -> float:
    out = subprocess.run([sys.executable, __file__, "--book-loop", *args], check=True, capture_output=True,
                         text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["mnist_mlp", "mnist_cgan"])
    ap.add_argument("--steps", type=int, default=3000, help="batch-1 steps per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data/processed")
    ap.add_argument("--book-threads", nargs="+", type=int, default=[0, 1],
                    help="thread counts of the book loop's runs (0: torch's default)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--book-loop", nargs=4, metavar=("VARIANT", "STEPS", "THREADS", "DATA_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.book_loop:
        v, steps, threads, data_dir = args.book_loop
        print(book_loop(v, int(steps), int(threads), Path(data_dir)))
        return
    if not (args.data_dir / "mnist.h5").exists():
        sys.exit(f"book_stage: {args.data_dir / 'mnist.h5'} is missing; run `dvc repro download_mnist` or pass "
                 f"--data-dir")
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for v in args.variants:
                row = {"stage": stage(v, args.steps, args.data_dir, Path(tmp))}
                for t in args.book_threads:
                    row[BOOK_RUNS[t]] = child([v, str(args.steps), str(t), str(args.data_dir)])
                row["ratio"] = row["stage"] / max(row[BOOK_RUNS[t]] for t in args.book_threads)
                results[v].append(row)
                print(f"round {r + 1} {v}: " + ", ".join(f"{k} {x:.2f}" for k, x in row.items()), flush=True)
    summary = {v: {k: {"median": statistics.median(x[k] for x in rows), "min": min(x[k] for x in rows),
                       "max": max(x[k] for x in rows)} for k in rows[0]} for v, rows in results.items()}
    books = [BOOK_RUNS[t] for t in args.book_threads]
    print(f"\n| variant | train stage images/s | {' | '.join(books)} | stage / faster book loop |\n"
          f"|---|---|{'---|' * len(books)}---|")
    for v, s in summary.items():
        cell = lambda k, f=".0f": f"{s[k]['median']:{f}} ({s[k]['min']:{f}}–{s[k]['max']:{f}})"  # noqa: E731
        print(f"| {v} | {cell('stage')} | {' | '.join(cell(b) for b in books)} | {cell('ratio', '.2f')} |")
    out = args.out or ROOT / "bench/results" / f"book_stage-{platform.node() or 'cpu'}.json"
    out.write_text(json.dumps({"steps": args.steps, "rounds": args.rounds, "load_average": os.getloadavg(),
                               "rounds_by_variant": results, "summary": summary}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
