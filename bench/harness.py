"""Timing harness: a median of several timed windows after warm-up, with the spread."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Optional

import torch


def sync(device: Optional[torch.device]) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(work: Callable[[], int], windows: int = 5, warmup: int = 1,
            device: Optional[torch.device] = None, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Run `work` (which does a fixed amount of work and returns how many items it processed) `warmup` times
    untimed, then `windows` times timed. Returns items/s as median, min and max over the windows."""
    for _ in range(warmup):
        work()
    rates = []
    for _ in range(windows):
        sync(device)
        t0 = clock()
        items = work()
        sync(device)
        rates.append(items / (clock() - t0))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "windows": windows}


def trainer(cfg, x: torch.Tensor, device: torch.device) -> Callable[[int], int]:
    """ganlab's training loop as `fit` runs it (the variant's speed settings, its step runner, a log row read back
    every `log_every` steps) on the uint8 images `x`. Returns `work(k)`: k iterations, each with D's and G's
    updates (n_critic aside: the costlier case), returning the number of real images used."""
    from ganlab.data.load import Dataset
    from ganlab.train import GraphedSteps, Logger, Steps, build_gan, set_backends

    set_backends(cfg.train)
    data = Dataset(x=x.to(device), y=None, cfg=cfg.data)
    gan = build_gan(cfg, data.shape, device)
    log = Logger("bench", device)
    steps = (GraphedSteps if cfg.train.cuda_graph else Steps)(gan, data, log)
    b, n = cfg.train.batch_size, len(data)
    perm, done = torch.randperm(n, device=device), [0]

    def work(k: int) -> int:
        for _ in range(k):
            i = done[0] % (n // b)
            steps(perm[i * b:(i + 1) * b], g_step=True)
            done[0] += 1
            if done[0] % cfg.train.log_every == 0:
                log.flush(done[0], 1)
        return k * b
    return work
