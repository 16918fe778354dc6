"""The floor under a joint batch-1 step of S seeds on this CPU: the optimiser's update alone, measured.

    python bench/joint_floor.py [--variant mnist_mlp] [--seeds 5] [--reps 2000] [--rounds 3]

At batch 1 one seed's hand-written step (`ganlab.engine.mlp_steps`) is bound by per-operation overhead: its
weights (~170,000 parameters a network for `mnist_mlp`, 0.7 MB) sit in the core's cache. Stacking S seeds removes
S - 1 overheads but multiplies the bytes every step must move: each iteration updates D twice and G once, and an
Adam update reads the parameters, gradients and both moments and writes three of them (7 x 4 bytes a parameter).
This script times exactly that part, `torch._fused_adam_` (the fused kernel the stage uses) over the flat buffers
of one seed and of S seeds stacked, alternately, D twice and G once per iteration as the step does, and reports
the milliseconds per iteration and the bytes per second it reached. A joint step can be no faster than this floor
plus its matrix products (which move the same weights again, forward and backward). One thread (`train.threads`
at batch 1). Writes bench/results/joint_floor-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def buffers(n: int, s: int) -> list[torch.Tensor]:
    """Parameters, gradients, first and second moments of s stacked seeds, and Adam's step count."""
    p, g = torch.randn(s, n) * 0.05, torch.randn(s, n) * 1e-3
    return [p, g, torch.zeros(s, n), torch.zeros(s, n), torch.zeros(())]


def adam(buf: list[torch.Tensor]) -> None:
    p, g, m, v, step = buf
    step.add_(1)
    torch._fused_adam_([p], [g], [m], [v], [], [step], amsgrad=False, lr=1e-4, beta1=0.9, beta2=0.999,
                       weight_decay=0.0, eps=1e-8, maximize=False)


def per_iteration(d: list[torch.Tensor], g: list[torch.Tensor], reps: int) -> float:
    """Seconds of the updates of one iteration: D's two and G's one."""
    for _ in range(20):
        adam(d), adam(d), adam(g)
    t0 = time.perf_counter()
    for _ in range(reps):
        adam(d), adam(d), adam(g)
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="mnist_mlp")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from ganlab.config import load_params
    from ganlab.engine.gan import build_gan

    cfg = load_params(ROOT / "params.yaml").variant(args.variant)
    gan = build_gan(cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": "cpu"})}),
                    (1, 28, 28), torch.device("cpu"))
    n_d, n_g = (sum(p.numel() for p in net.parameters()) for net in (gan.D, gan.G))
    times: dict[int, list[float]] = {1: [], args.seeds: []}
    for _ in range(args.rounds):  # alternately: a change of the machine's load falls on both
        for s in times:
            times[s].append(per_iteration(buffers(n_d, s), buffers(n_g, s), args.reps))
    rows = {}
    for s, t in times.items():
        med = statistics.median(t)
        moved = 7 * 4 * s * (2 * n_d + n_g)  # bytes an iteration's three updates read and write
        rows[s] = {"ms_per_iteration": {"median": med * 1e3, "min": min(t) * 1e3, "max": max(t) * 1e3},
                   "gb_per_s": moved / med / 1e9}
        print(f"{s} seed(s): Adam's updates {med * 1e3:.3f} ms an iteration ({min(t) * 1e3:.3f}–"
              f"{max(t) * 1e3:.3f}), {moved / med / 1e9:.1f} GB/s", flush=True)
    out = {"variant": args.variant, "params_d": n_d, "params_g": n_g, "seeds": args.seeds, "rounds": args.rounds,
           "load_average": os.getloadavg(), "rows": rows,
           "ratio": rows[args.seeds]["ms_per_iteration"]["median"] / rows[1]["ms_per_iteration"]["median"]}
    path = ROOT / "bench/results" / f"joint_floor-{platform.node()}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"ratio {out['ratio']:.2f}; wrote {path}")


if __name__ == "__main__":
    main()
