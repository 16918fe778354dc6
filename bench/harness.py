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


def measure_interleaved(works: dict[str, Callable[[], int]], windows: int = 5, warmup: int = 1,
                        device: Optional[torch.device] = None,
                        clock: Callable[[], float] = time.perf_counter) -> dict[str, dict]:
    """`measure` for several works at once, their windows taken in turn (A B C A B C ...), so that a change in the
    machine's load in the middle of a run falls on all of them alike. Returns {name: measure's dict}."""
    for work in works.values():
        for _ in range(warmup):
            work()
    rates: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(windows):
        for name, work in works.items():
            sync(device)
            t0 = clock()
            items = work()
            sync(device)
            rates[name].append(items / (clock() - t0))
    return {name: {"median": statistics.median(r), "min": min(r), "max": max(r), "windows": windows}
            for name, r in rates.items()}


def trainer(cfg, x: torch.Tensor, device: torch.device, y: Optional[torch.Tensor] = None) -> Callable[[int], int]:
    """ganlab's training loop as `fit` runs it (the variant's speed settings, its step runner and CPU thread
    count, a log row read back every `log_every` steps) on the uint8 images `x` (and labels `y`, random digits
    when None for a conditional variant). Returns `work(k)`: k iterations, each with D's and G's updates
    (n_critic aside: the costlier case), returning the number of real images used."""
    from ganlab.data.load import Dataset
    from ganlab.engine.gan import build_gan
    from ganlab.engine.runners import Logger, step_runner
    from ganlab.engine.settings import cpu_threads, set_backends, training_threads

    set_backends(cfg.train)
    if y is None and getattr(cfg.model, "n_classes", 0):
        y = torch.randint(0, cfg.model.n_classes, (len(x),), generator=torch.Generator().manual_seed(0))
    data = Dataset(x=x.to(device), y=None if y is None else y.to(device), cfg=cfg.data)
    gan = build_gan(cfg, data.shape, device)
    log = Logger("bench", device)
    steps = step_runner(gan, data, log)
    b, n = cfg.train.batch_size, len(data)
    perm, done = torch.randperm(n, device=device), [0]
    threads = training_threads(cfg.train, device)

    def work(k: int) -> int:
        with cpu_threads(threads):
            for _ in range(k):
                i = done[0] % (n // b)
                steps(perm[i * b:(i + 1) * b], g_step=True)
                done[0] += 1
                if done[0] % cfg.train.log_every == 0:
                    log.flush(done[0], 1)
        return k * b
    return work
