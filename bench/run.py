"""The speed suite: ganlab's trainer against plain PyTorch baselines, on one device, in one run.

    python bench/run.py [--device auto] [--windows 5] [--steps 20] [--quick]

1. Batched images/s of ganlab's step against the pytorch/examples DCGAN loop (bench/baselines/dataloader_loop.py:
   Dataset + DataLoader workers + per-batch .to(device) + .item() logging), same networks, loss, schedule (BCE,
   one D step on real + fake, G on the same fake batch), batch size and device.
2. Book mode: ganlab at batch 1 (the book's split D steps, fresh seeds) against the book's per-sample loop
   (bench/baselines/book_loop.py), `mnist_mlp`.
3. Achieved FLOP/s of the convolutional variants (FLOPs of one iteration counted by torch.utils.flop_counter),
   as a share of the device's peak for the precision used, where the peak is known.
4. Peak device memory of each ganlab run (CUDA only; on CPU the process shares one heap: not reported).
Every figure is the median of `--windows` timed windows after a warm-up, with min and max; ratios are taken
within the run. Writes bench/results/<device>.json and prints a markdown table. Data are synthetic uint8 images
of each variant's shape: speed does not depend on pixel values, and the GPU machine has no data sets.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from baselines import book_loop, dataloader_loop  # noqa: E402
from harness import measure, sync  # noqa: E402

from ganlab.config import Variant, load_params  # noqa: E402
from ganlab.data.load import Dataset, resize  # noqa: E402
from ganlab.train import GAN, build_gan, d_update, g_update, resolve_device  # noqa: E402

BATCHED = ["mnist_mlp", "mnist_vanilla", "mnist_dcgan64", "celeba_dcgan", "celeba_cnn"]
CONV = ["mnist_dcgan64", "celeba_dcgan", "celeba_cnn"]
SOURCE_SHAPES = {"mnist": (1, 28, 28), "celeba": (3, 128, 128), "celeba_full": (3, 218, 178)}
# Dense peak FLOP/s by device (vendor datasheets). TF32 is what fp32 matmuls/convs use with TF32 enabled.
PEAKS = {"H100 80GB HBM3": {"fp32": 494.7e12, "bf16": 989.4e12},  # H100 SXM5
         "H100 PCIe": {"fp32": 378e12, "bf16": 756e12},
         "H200": {"fp32": 494.7e12, "bf16": 989.4e12}}


def peak_flops(device_name: str, precision: str) -> Optional[float]:
    for key, peaks in PEAKS.items():
        if key in device_name:
            return peaks[precision]
    return None


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` (forward and backward matmuls and convolutions), by torch's counter."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def variant(name: str, batch: int, **train) -> Variant:
    """The variant with the baseline's schedule, so that both sides do the same maths."""
    cfg = load_params(ROOT / "params.yaml").variant(name)
    t = {"batch_size": batch, "d_update": "joint", "g_noise": "reuse", "n_critic": 1} | train
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"loss": "bce", "latent": "randn"}),
                                  "train": cfg.train.model_copy(update=t)})


def synthetic(cfg: Variant, n: int) -> torch.Tensor:
    x = torch.randint(0, 256, (n, *SOURCE_SHAPES[cfg.data.dataset]), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    return resize(x, cfg.data.image_size) if cfg.data.image_size else x


def ganlab_iteration(cfg: Variant, device: torch.device) -> tuple[GAN, Callable[[], int]]:
    data = Dataset(x=synthetic(cfg, cfg.train.batch_size * 8).to(device), y=None, cfg=cfg.data)
    gan = build_gan(cfg, data.shape, device)
    b, n = cfg.train.batch_size, len(data)
    perm = torch.randperm(n, device=device)
    state = {"i": 0}

    def one() -> int:
        i = state["i"] % (n // b)
        state["i"] += 1
        real, y = data.batch(perm[i * b:(i + 1) * b], cfg.train.channels_last)
        _, fake, y_fake = d_update(gan, real, y)
        g_update(gan, b, fake, y_fake)
        return b
    return gan, one


def repeat(one: Callable[[], int], steps: int) -> Callable[[], int]:
    return lambda: sum(one() for _ in range(steps))


def baseline_work(cfg: Variant, device: torch.device, steps: int, workers: int) -> Callable[[], int]:
    gan = build_gan(cfg, synthetic(cfg, 1).shape[1:], device)  # same networks, same optimisers
    images = synthetic(cfg, cfg.train.batch_size * 8).numpy()
    loader = dataloader_loop.make_loader(images, cfg.train.batch_size, cfg.data.scale == "symmetric", workers,
                                         device.type == "cuda")
    return lambda: dataloader_loop.train_steps(gan.G, gan.D, gan.opt_g, gan.opt_d, loader, cfg.model.nz,
                                               device, steps)


def batched(device: torch.device, args: argparse.Namespace) -> list[dict]:
    rows = []
    for name in (BATCHED[:2] if args.quick else BATCHED):
        cfg = variant(name, 128)
        gan, one = ganlab_iteration(cfg, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ours = measure(repeat(one, args.steps), windows=args.windows, device=device)
        mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        base = measure(baseline_work(cfg, device, args.steps, args.workers), windows=args.windows, device=device)
        rows.append({"suite": "batched", "variant": name, "batch": 128, "precision": "fp32", "ganlab": ours,
                     "baseline": base, "speedup": ours["median"] / base["median"], "peak_memory_bytes": mem})
    return rows


def book_mode(device: torch.device, args: argparse.Namespace) -> list[dict]:
    cfg = load_params(ROOT / "params.yaml").variant("mnist_mlp")
    gan, one = ganlab_iteration(cfg, device)  # the book's own schedule: split D steps, fresh seeds, batch 1
    ours = measure(repeat(one, args.steps * 20), windows=args.windows, device=device)
    D, G = book_loop.Discriminator().to(device), book_loop.Generator().to(device)
    x = synthetic(cfg, args.steps * 20).reshape(-1, 784).numpy()
    dataset = book_loop.TensorRows(x, device)
    base = measure(lambda: book_loop.train_gan(D, G, dataset, limit=len(x),
                                               seed_fn=lambda n: torch.randn(n, device=device)),
                   windows=args.windows, device=device)
    return [{"suite": "book", "variant": "mnist_mlp", "batch": 1, "precision": "fp32", "ganlab": ours,
             "baseline": base, "speedup": ours["median"] / base["median"], "peak_memory_bytes": None}]


def flops(device: torch.device, args: argparse.Namespace, name_of_device: str) -> list[dict]:
    rows = []
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    for name in ([] if args.quick else CONV):
        for precision in precisions:
            cfg = variant(name, 128, precision=precision, channels_last=device.type == "cuda")
            gan, one = ganlab_iteration(cfg, device)
            per_iteration = count_flops(one)
            rate = measure(repeat(one, args.steps), windows=args.windows, device=device)
            achieved = per_iteration * rate["median"] / 128
            peak = peak_flops(name_of_device, precision)
            rows.append({"suite": "flops", "variant": name, "batch": 128, "precision": precision, "ganlab": rate,
                         "flops_per_iteration": per_iteration, "achieved_flops": achieved,
                         "share_of_peak": achieved / peak if peak else None})
    return rows


def table(rows: list[dict]) -> str:
    out = ["| suite | variant | batch | precision | ganlab images/s (min–max) | baseline images/s | × | "
           "TFLOP/s (share of peak) | peak memory |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g, b = r["ganlab"], r.get("baseline")
        tf = (f"{r['achieved_flops'] / 1e12:.2f}" + (f" ({100 * r['share_of_peak']:.0f} %)"
              if r.get("share_of_peak") else "")) if "achieved_flops" in r else ""
        mem = f"{r['peak_memory_bytes'] / 1e9:.2f} GB" if r.get("peak_memory_bytes") else ""
        out.append(f"| {r['suite']} | {r['variant']} | {r['batch']} | {r['precision']} | {g['median']:.0f} "
                   f"({g['min']:.0f}–{g['max']:.0f}) | {b['median']:.0f} | {r['speedup']:.2f} | {tf} | {mem} |"
                   if b else f"| {r['suite']} | {r['variant']} | {r['batch']} | {r['precision']} | "
                   f"{g['median']:.0f} ({g['min']:.0f}–{g['max']:.0f}) | | | {tf} | {mem} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="iterations per timed window (x20 in book mode)")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="the baseline's DataLoader")
    ap.add_argument("--quick", action="store_true", help="the MLP variants only (the CPU run)")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = batched(device, args) + book_mode(device, args) + flops(device, args, name)
    print(f"device: {name}, torch {torch.__version__}\n\n{table(rows)}")
    path = ROOT / "bench/results" / f"{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-').lower()}.json"
    path.write_text(json.dumps({"device": name, "torch": torch.__version__, "args": vars(args), "rows": rows},
                               indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
