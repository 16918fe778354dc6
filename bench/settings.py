"""The gain of each speed setting on its own: ganlab's trainer with one `train.` setting turned on, against the
defaults, per variant, on one device.

    python bench/settings.py [--device auto] [--windows 5] [--variants mnist_mlp:1 mnist_vanilla:128 ...]
                             [--settings defaults channels_last ...]

Each variant runs at the given batch size (batch 1 on the variant's own schedule, the book mode; larger batches
on the baseline schedule of bench/run.py). Settings that need CUDA are skipped on CPU and say so. Writes
bench/results/settings-<device>.json and prints a markdown table; ratios are within the run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from harness import measure, trainer  # noqa: E402
from run import synthetic, variant  # noqa: E402  (first: it puts src/ and bench/.deps on the path)

from ganlab.engine.settings import resolve_device  # noqa: E402

SETTINGS = {"defaults": {}, "fused": {"fused": True}, "compile": {"compile": True},
            "precision: bf16": {"precision": "bf16"}, "channels_last": {"channels_last": True},
            "tf32": {"tf32": True}, "cudnn_benchmark": {"cudnn_benchmark": True},
            "cuda_graph": {"cuda_graph": True}}
CUDA_ONLY = {"tf32", "cudnn_benchmark", "cuda_graph"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--variants", nargs="+", default=["mnist_mlp:1", "mnist_vanilla:128", "celeba_dcgan:128"])
    ap.add_argument("--images", type=int, default=2560, help="images per timed window (batch 1: 400 at most)")
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                    help="which settings to time ('defaults' first: the others are compared with it)")
    ap.add_argument("--out", type=Path, help="where to write the JSON (default bench/results/settings-<device>.json)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    print(f"device: {name}, torch {torch.__version__}\n\n| variant | batch | setting | images/s (min–max) | "
          f"× defaults |\n|---|---|---|---|---|", flush=True)
    for spec in args.variants:
        vname, batch = spec.split(":")[0], int(spec.split(":")[1])
        base = None
        for label, setting in SETTINGS.items():
            if label not in args.settings:
                continue
            if label in CUDA_ONLY and device.type != "cuda":
                continue
            cfg = variant(vname, batch, baseline_schedule=batch != 1, **setting)
            if label == "channels_last" and cfg.model.arch == "mlp":
                continue
            steps = max(1, min(args.images, 400 if batch == 1 else args.images) // batch)
            work = trainer(cfg, synthetic(cfg, max(8 * batch, 64)), device)
            rate = measure(lambda: work(steps), windows=args.windows, device=device)
            base = base or rate["median"]
            rows.append({"variant": vname, "batch": batch, "setting": label, "images_per_s": rate,
                         "vs_defaults": rate["median"] / base})
            print(f"| {vname} | {batch} | {label} | {rate['median']:.0f} ({rate['min']:.0f}–{rate['max']:.0f}) | "
                  f"{rate['median'] / base:.2f} |", flush=True)
    device_slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    path = args.out or ROOT / "bench/results" / f"settings-{device_slug}.json"
    path.write_text(json.dumps({"device": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
                                "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
