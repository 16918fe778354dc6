"""The CelebA variants on a CPU, measured against what the CPU can do: FLOPs per image, images/s, the fraction of
the machine's sgemm rate they reach, and where the rest of the time goes.

    python bench/celeba_flops.py [--variants celeba_mlp celeba_cnn ...] [--windows 5] [--window-s 20]
                                 [--threads N]
    python bench/celeba_flops.py --ab train.fused=true --variants celeba_cnn [--windows 5]

`--ab KEY=VALUE`: a setting's effect instead, as a ratio within one run: the variant as params.yaml has it (A) and
with KEY set to VALUE (B), timed in alternating windows in one process; per window pair B's images/s over A's,
their median, min and max (bench/results/celeba_ab-<host>.json).

Per variant, at its source batch size and fp32, in this process, on synthetic uint8 faces of its shape (the step
does not look at pixel values):
- FLOPs: one training iteration (D on real, D on fake, G through D, both backward passes, the optimisers) counted
  by `torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions, forward and backward), per
  real image;
- images/s: the train stage's own loop (bench/harness.py `trainer`) after 2 warm-up iterations, the median of
  `--windows` windows of about `--window-s` seconds each, with their min and max;
- the ceiling: the median rate of a 2048 x 2048 fp32 matrix product on the same threads (`torch.mm`), and the
  fraction = FLOPs x images/s / that rate;
- where the time goes: `torch.profiler` over one window, the self CPU time of the top operators.
Writes bench/results/celeba_flops-<host>.json. The timing is only as good as the machine is quiet: the load
average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
VARIANTS = ["celeba_mlp", "celeba_cnn", "celeba_cnn_gelu", "celeba_dcgan", "celeba_wgan_gp"]
SHAPES = {"celeba": (3, 128, 128), "celeba_full": (3, 218, 178)}


def sgemm_rate(n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of an n x n fp32 matrix product on the current threads (median of `reps`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * n ** 3 / (time.perf_counter() - t0))
    return statistics.median(rates)


def workload(cfg, window_s: float) -> tuple[Callable[[int], int], int]:
    """The train stage's loop (bench/harness.py `trainer`) on synthetic faces of the variant's shape, warmed up
    (allocations, kernel selection), and the number of iterations that fill a window of about `window_s`."""
    from harness import trainer

    from ganlab.data.load import resize

    x = torch.randint(0, 256, (max(2 * cfg.train.batch_size, 4), *SHAPES[cfg.data.dataset]), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    if cfg.data.image_size:
        x = resize(x, cfg.data.image_size)
    work = trainer(cfg, x, torch.device("cpu"))
    work(2)
    t0 = time.perf_counter()
    work(1)
    return work, max(1, round(window_s / (time.perf_counter() - t0)))


def one(variant: str, windows: int, window_s: float) -> dict:
    from run import count_flops

    cfg = variant_cfg(variant)
    b = cfg.train.batch_size
    work, k = workload(cfg, window_s)
    images: list[int] = []
    try:
        flops = count_flops(lambda: images.append(work(1))) / images[0]  # bench/run.py's counter
    except RuntimeError as err:  # torch's counter cannot follow autograd.grad (WGAN-GP's penalty): say so
        print(f"{variant}: FLOPs not counted: {err}", file=sys.stderr)
        flops = float("nan")
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter()
        n = work(k)
        rates.append(n / (time.perf_counter() - t0))
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        work(k)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    top = [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls_per_iter": e.count / k}
           for e in ops[:8]]
    ips = statistics.median(rates)
    return {"variant": variant, "batch": b, "gflop_per_image": flops / 1e9, "iters_per_window": k,
            "images_per_s": {"median": ips, "min": min(rates), "max": max(rates), "windows": windows},
            "gflop_per_s": flops * ips / 1e9, "epoch_20k_s": 20_000 / ips, "top_ops": top}


def variant_cfg(variant: str, override: Optional[str] = None):
    """The variant as params.yaml has it, on the CPU in fp32, with `override` ("train.fused=true") applied."""
    import yaml

    from ganlab.config import load_params

    cfg = load_params(ROOT / "params.yaml").variant(variant)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": "cpu", "precision": "fp32"})})
    if override:
        key, value = override.split("=", 1)
        section, field = key.split(".")
        part = getattr(cfg, section).model_copy(update={field: yaml.safe_load(value)})
        cfg = cfg.model_copy(update={section: type(part).model_validate(part.model_dump())})
    return cfg


def ab(variant: str, override: str, windows: int, window_s: float) -> dict:
    """B (the override) against A (the variant as it is): images/s in alternating windows, A first."""
    arms = [workload(variant_cfg(variant, o), window_s) for o in (None, override)]
    rates: list[list[float]] = [[], []]
    for _ in range(windows):
        for i, (work, k) in enumerate(arms):
            t0 = time.perf_counter()
            n = work(k)
            rates[i].append(n / (time.perf_counter() - t0))
    ratios = [b / a for a, b in zip(*rates)]
    return {"variant": variant, "override": override, "images_per_s": {"a": rates[0], "b": rates[1]},
            "ratio_b_over_a": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                               "windows": windows}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--window-s", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--ab", metavar="KEY=VALUE", help="time the variants with and without this setting")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.ab:
        rows = [ab(v, args.ab, args.windows, args.window_s) for v in args.variants]
        for r in rows:
            q = r["ratio_b_over_a"]
            print(f"{r['variant']}: {args.ab} {q['median']:.3f}x images/s ({q['min']:.3f}-{q['max']:.3f}, "
                  f"{q['windows']} window pairs)", flush=True)
        path = ROOT / "bench/results" / f"celeba_ab-{platform.node()}.json"
        old = json.loads(path.read_text())["rows"] if path.exists() else []
        keep = [r for r in old if (r["variant"], r["override"]) not in {(v, args.ab) for v in args.variants}]
        path.write_text(json.dumps({"threads": args.threads, "rows": keep + rows}, indent=2) + "\n")
        return
    ceiling = sgemm_rate()
    rows = []
    for v in args.variants:
        r = one(v, args.windows, args.window_s)
        r["fraction_of_sgemm"] = r["gflop_per_s"] * 1e9 / ceiling
        rows.append(r)
        print(f"| {v} | {r['batch']} | {r['gflop_per_image']:.2f} | {r['images_per_s']['median']:.2f} "
              f"({r['images_per_s']['min']:.2f}–{r['images_per_s']['max']:.2f}) | {r['gflop_per_s']:.1f} | "
              f"{100 * r['fraction_of_sgemm']:.0f} % | "
              + ", ".join(f"{o['op']} {100 * o['share']:.0f} %" for o in r["top_ops"][:3]) + " |", flush=True)
    ceiling_again = sgemm_rate()
    out = {"threads": args.threads, "sgemm_gflop_per_s": [ceiling / 1e9, ceiling_again / 1e9],
           "load_average": os.getloadavg(), "rows": rows}
    path = ROOT / "bench/results" / f"celeba_flops-{platform.node()}.json"
    if path.exists():  # the variants not run this time keep their rows (and the run they came from)
        old = json.loads(path.read_text())
        out["earlier"] = [r | {"sgemm_gflop_per_s": old["sgemm_gflop_per_s"], "load_average": old["load_average"]}
                          for r in old["rows"] + old.get("earlier", []) if r["variant"] not in args.variants]
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"sgemm {ceiling / 1e9:.1f} / {ceiling_again / 1e9:.1f} GFLOP/s; wrote {path}")


if __name__ == "__main__":
    main()
