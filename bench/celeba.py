"""CelebA variants: images/s, epoch time for 20,000 images and peak memory, per batch size and precision.

    python bench/celeba.py [--variants celeba_mlp celeba_cnn ...] [--batches source 128] [--precisions fp32 bf16]
                           [--steps 5] [--device auto]

Each configuration runs in its own process (so its peak memory is its own) on synthetic uint8 faces of the
variant's shape: the training step does not look at pixel values, and the real set need not be downloaded.
Peak memory is `torch.cuda.max_memory_allocated` on CUDA and the process's peak RSS on CPU (which includes
Python and torch themselves, about 0.35 GB). Writes bench/results/celeba-<device>.json and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
VARIANTS = ["celeba_mlp", "celeba_cnn", "celeba_cnn_gelu", "celeba_dcgan", "celeba_wgan_gp"]
SHAPES = {"celeba": (3, 128, 128), "celeba_full": (3, 218, 178)}


def one(variant: str, batch: int, precision: str, steps: int, device_name: str) -> dict:
    """Time `steps` training steps (after one warm-up step) of one configuration, in this process."""
    from harness import measure, trainer

    from ganlab.config import load_params
    from ganlab.data.load import resize
    from ganlab.engine.settings import peak_memory, resolve_device

    cfg = load_params(ROOT / "params.yaml").variant(variant)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": batch, "precision": precision})})
    device = resolve_device(device_name)
    x = torch.randint(0, 256, (batch * 2, *SHAPES[cfg.data.dataset]), dtype=torch.uint8)
    if cfg.data.image_size:
        x = resize(x, cfg.data.image_size)
    work = trainer(cfg, x, device)
    work(1)  # warm-up: allocations, kernel selection
    rate = measure(lambda: work(steps), windows=1, warmup=0, device=device)
    mem, kind = peak_memory(device)
    return {"variant": variant, "batch": batch, "precision": precision, "images_per_s": rate["median"],
            "epoch_20k_s": 20_000 / rate["median"], "peak_memory_gb": mem / 1e9, "memory_kind": kind,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--batches", nargs="+", default=["source", "128"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--one", nargs=3, metavar=("VARIANT", "BATCH", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.one[2], args.steps, args.device)))
        return
    from ganlab.config import load_params
    params, rows = load_params(ROOT / "params.yaml"), []
    for v in args.variants:
        source = params.variant(v).train.batch_size
        for b in sorted({source if b == "source" else int(b) for b in args.batches}):
            for p in args.precisions:
                out = subprocess.run([sys.executable, __file__, "--one", v, str(b), p, "--steps", str(args.steps),
                                      "--device", args.device], capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]) | {"source_batch": b == source})
                r = rows[-1]
                print(f"| {v} | {b}{' (source)' if r['source_batch'] else ''} | {p} | {r['images_per_s']:.1f} | "
                      f"{r['epoch_20k_s'] / 60:.1f} min | {r['peak_memory_gb']:.2f} GB |", flush=True)
    device = re.sub(r"[^A-Za-z0-9]+", "-", rows[0]["device"]).strip("-").lower()
    path = ROOT / "bench/results" / f"celeba-{device}.json"
    path.write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
