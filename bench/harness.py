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
