"""Why the studies ran with OMP_NUM_THREADS=1: the evaluator CNN's training step at 1 and at 2 torch threads,
alternating, on a machine whose cores are oversubscribed (other jobs running).

    nice -n 19 python docs/studies/threads_under_load.py [--reps 4] [--steps 10]

On an idle machine the two threads share the work; when every core already has runnable jobs, each of torch's
parallel regions waits for a thread the scheduler has not run yet, and a step can take many times longer than on
one thread. Prints the median seconds per step (batch 64 of 28x28 digits, Adam) and each rep's value.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from ganlab.evaluation.classifier import Classifier, classifier_loss  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    net = Classifier("cnn")
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))

    def seconds_per_step() -> float:
        t = time.perf_counter()
        for _ in range(args.steps):
            opt.zero_grad()
            classifier_loss("bce", net(x), y).backward()
            opt.step()
        return (time.perf_counter() - t) / args.steps

    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.reps):  # alternating, so that both see the same load
        for n in times:
            torch.set_num_threads(n)
            times[n].append(seconds_per_step())
    for n, ts in times.items():
        print(f"{n} thread(s): median {statistics.median(ts):.4f} s/step; reps {[round(t, 4) for t in ts]}")
    print(f"ratio 2 threads / 1 thread: {statistics.median(times[2]) / statistics.median(times[1]):.1f}x")


if __name__ == "__main__":
    main()
