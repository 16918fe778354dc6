"""Process settings of a run: the device, torch's default dtype, the backends' switches, CPU threads, and the
peak memory a run reports. Everything here changes kernels or bookkeeping, never the schedule."""

from __future__ import annotations

import resource
from contextlib import contextmanager
from typing import Iterator, Optional

import torch

from ganlab.config import ConfigError, TrainCfg


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but CUDA is not available here; use 'auto' or 'cpu'")
    return device


@contextmanager
def run_dtype(precision: str) -> Iterator[None]:
    """torch's default dtype for a run of `train.precision`: float64 for fp64 (data, noise, sums and optimiser
    state then follow the weights), else float32."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if precision == "fp64" else torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def set_backends(t: TrainCfg) -> None:
    """The process-wide switches of `train`: TF32 (false: strict fp32 in matmuls and cuDNN convolutions, as the
    sources' pre-Ampere GPUs computed) and cuDNN's autotuner."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = t.tf32
    torch.backends.cudnn.benchmark = t.cudnn_benchmark


def training_threads(t: TrainCfg, device: torch.device) -> Optional[int]:
    """`train.threads`, or 1 for batch-1 training on a CPU: each op is microseconds of work, and a second
    thread only adds synchronisation (bench/README.md: faster when idle, several times faster when the cores are
    shared); None leaves torch's default."""
    if t.threads is not None:
        return t.threads
    return 1 if device.type == "cpu" and t.batch_size == 1 else None


@contextmanager
def cpu_threads(n: Optional[int]) -> Iterator[None]:
    """torch's intra-op thread count set to n (None: unchanged) for the block."""
    saved = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"
