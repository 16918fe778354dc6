"""The wall time of the MNIST + toy curriculum at the sources' schedules, per variant, extrapolated from timed
partial runs of the train stage's own code (`ganlab.engine.train.fit`, its defaults: the hand-written step and one
thread at batch 1, autograd elsewhere).

    python bench/curriculum.py [--seconds 20] [--data-dir data/processed] [--variants ...]

For each variant: a first run of a few steps (to size the second), then a run of about `--seconds`; the figure is
that run's images/s (train.json: logging, grids and checkpoints included) and the full schedule's time is its
steps × batch / images/s. Needs data/processed/mnist.h5 and the toy sets (`dvc repro make_toy download_mnist`).
Writes bench/results/curriculum-<host>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]

from ganlab.config import load_params  # noqa: E402
from ganlab.data.load import load_dataset  # noqa: E402
from ganlab.engine.contract import RunPaths  # noqa: E402
from ganlab.engine.train import fit, plan  # noqa: E402

VARIANTS = ["pattern_1010", "gaussian_2d", "mnist_mlp_first", "mnist_mlp", "mnist_cgan", "mnist_vanilla",
            "mnist_lsgan", "mnist_dcgan", "mnist_dcgan64", "mnist_linear", "mnist_conv", "mnist_wgan_gp"]


def timed_run(cfg, name: str, steps: int, data_dir: Path, tmp: Path) -> dict:
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": steps, "device": "cpu"})})
    root = Path(tempfile.mkdtemp(dir=tmp))
    return fit(cfg, name, RunPaths.for_variant(name, root, data_dir))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="the timed run's length, roughly")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data/processed")
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants:
            cfg = params.variant(name)
            n = len(load_dataset(cfg.data, args.data_dir, "cpu"))
            per_epoch, total = plan(cfg, n)
            probe = timed_run(cfg, name, min(total, max(2, 200 // cfg.train.batch_size)), args.data_dir, Path(tmp))
            steps = min(total, max(5, int(args.seconds * probe["images_per_s"] / cfg.train.batch_size)))
            m = timed_run(cfg, name, steps, args.data_dir, Path(tmp))
            full_s = total * cfg.train.batch_size / m["images_per_s"]
            rows.append({"variant": name, "batch": cfg.train.batch_size, "epochs": cfg.train.epochs,
                         "steps_total": total, "steps_timed": m["steps"], "images_per_s": m["images_per_s"],
                         "timed_s": m["wall_time_s"], "full_schedule_s": round(full_s, 1)})
            print(f"{name}: {m['images_per_s']:.0f} images/s over {m['steps']} steps -> {full_s / 60:.1f} min "
                  f"for {total} steps", flush=True)
    total_s = sum(r["full_schedule_s"] for r in rows)
    print(f"\n| variant | batch × steps | images/s | full schedule | share |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['batch']} × {r['steps_total']:,} | {r['images_per_s']:,.0f} | "
              f"{r['full_schedule_s'] / 60:.1f} min | {100 * r['full_schedule_s'] / total_s:.0f} % |")
    print(f"| all | | | {total_s / 3600:.2f} h | |")
    out = args.out or ROOT / "bench/results" / f"curriculum-{platform.node() or 'cpu'}.json"
    out.write_text(json.dumps({"load_average": os.getloadavg(), "rows": rows, "total_s": round(total_s, 1)},
                              indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
