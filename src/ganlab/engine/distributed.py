"""Data-parallel training: `train.nproc: N` runs one variant in N processes under torchrun, each on a shard of
every batch, and gives the same weights as one process training on the whole batch.

How it works (`train.nproc > 1`, batched variants only):
- stages/train.py, started by `dvc repro` as usual, checks the configuration and re-runs itself under
  `python -m torch.distributed.run --standalone --nproc-per-node N` (torchrun); each process then joins the group
  (`gloo` on CPU, `nccl` on CUDA, process r on cuda:<local rank r>).
- Every process builds the same networks from the same seed and draws the same random numbers (the epoch's order,
  the latents, the penalty's weights) for the whole batch `train.batch_size`; process r takes rows
  [r*B/N, (r+1)*B/N) of the batch and of each draw. So the global batch is the batch one process would train on.
- Before every optimiser step the gradients are averaged across the processes (one all-reduce of all of them), the
  averaging DistributedDataParallel does; the mean of N equal shards' mean losses is the whole batch's mean loss.
  DDP's own wrapper is not used: a GAN step runs D several times per backward, steps G through a frozen D and
  differentiates through D with autograd.grad for WGAN-GP's penalty, none of which DDP's reducer allows.
- BatchNorm: batch statistics over the global batch, as one process computes them: nn.SyncBatchNorm on GPUs, and
  on CPU (which SyncBatchNorm does not support) `SyncBatchNormCPU` below, two differentiable all-reduces.
- The logged losses are averaged across the processes too; only rank 0 logs to MLflow and writes models, metrics,
  samples and checkpoints. A resumed run: every process reads rank 0's checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ganlab.config import ConfigError, Variant
from ganlab.engine.gan import GAN
from ganlab.engine.runners import Logger, Steps
from ganlab.engine.settings import resolve_device
from ganlab.engine.step import Draws, draw, iteration


def check(cfg: Variant, name: str) -> None:
    """Refuse what cannot be split across `train.nproc` processes, before anything starts."""
    t = cfg.train
    if t.nproc == 1:
        return
    key = f"variants.{name}.train"
    if t.batch_size == 1:
        raise ConfigError(f"{key}.nproc = {t.nproc}: data-parallel training splits each batch across processes, "
                          f"but {name} trains on batches of 1 (the source's schedule), which cannot be split; "
                          f"set train.nproc: 1 for it")
    if t.batch_size % t.nproc:
        raise ConfigError(f"{key}.nproc = {t.nproc}: batch_size {t.batch_size} does not split into {t.nproc} "
                          f"equal shards; choose a batch size divisible by nproc")
    if t.cuda_graph:
        raise ConfigError(f"{key}.nproc = {t.nproc}: cuda_graph cannot capture the cross-process all-reduce; "
                          f"set train.cuda_graph: false for data-parallel runs")
    if t.device.startswith("cuda:"):
        raise ConfigError(f"{key}.device = {t.device!r}: with nproc > 1 process r uses cuda:<local rank r>; "
                          f"set train.device to auto or cuda")
    if not t.drop_last:
        raise ConfigError(f"{key}.nproc = {t.nproc}: a short last batch would not split evenly; set "
                          f"train.drop_last: true for data-parallel runs")


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_writer() -> bool:
    """Rank 0, or a single process: the one that logs and writes outputs."""
    return int(os.environ.get("RANK", "0")) == 0


def launch(nproc: int, argv: list[str]) -> int:
    """Re-run this script (argv[0]) with its arguments in `nproc` processes under torchrun; its exit status."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *argv]
    print(f"train: {nproc} processes: {' '.join(cmd)}", file=sys.stderr)
    proc = subprocess.Popen(cmd)
    # `dvc queue kill` sends SIGTERM: pass it on to torchrun, which stops its workers (rank 0 ends its MLflow run)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Parallel:
    rank: int
    world: int
    device: torch.device

    def wrap(self, gan: GAN) -> None:
        """Global-batch BatchNorm in G and D, and gradients averaged across processes before each step."""
        gan.G, gan.D = sync_batchnorm(gan.G, self.device), sync_batchnorm(gan.D, self.device)
        for opt in (gan.opt_g, gan.opt_d):
            opt.register_step_pre_hook(self._average_grads)

    def _average_grads(self, opt: torch.optim.Optimizer, args, kwargs) -> None:
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def steps(self, gan: GAN, data, log: Logger) -> "ShardedSteps":
        return ShardedSteps(gan, data, log, self)

    def logger(self, name: str, device: torch.device) -> "ReducedLogger":
        return ReducedLogger(name, device, self.world)


_CURRENT: Optional[Parallel] = None


def setup(cfg: Variant) -> Optional[Parallel]:
    """Join the process group when running under torchrun with `train.nproc > 1`; None for one process."""
    global _CURRENT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.train.nproc == 1:
        return None
    if not under_torchrun() or world != cfg.train.nproc:
        where = f"one of {world} processes" if under_torchrun() else "not started by torchrun"
        raise ConfigError(f"train.nproc is {cfg.train.nproc} but this process is {where}; run the stage "
                          f"(stages/train.py), which starts torchrun with train.nproc processes")
    if _CURRENT is not None:
        return _CURRENT
    local = int(os.environ["LOCAL_RANK"])
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    _CURRENT = Parallel(dist.get_rank(), dist.get_world_size(), device)
    return _CURRENT


def teardown() -> None:
    global _CURRENT
    if dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = None


class ShardedSteps(Steps):
    """Every process draws the whole batch's randomness, in step with the others, and trains on its rows."""

    def __init__(self, gan: GAN, data, log: Logger, par: Parallel):
        super().__init__(gan, data, log)
        self.par = par

    def _rows(self, n: int) -> slice:
        k = n // self.par.world
        return slice(self.par.rank * k, (self.par.rank + 1) * k)

    def __call__(self, idx: Tensor, g_step: bool) -> None:
        rows = self._rows(idx.shape[0])
        real, y = self.data.batch(idx[rows], self.gan.cfg.train.channels_last)
        whole = draw(self.gan, (idx.shape[0], *real.shape[1:]), g_step)
        mine = Draws(**{k: None if v is None else v[rows] for k, v in vars(whole).items()})
        iteration(self.gan, real, y, mine, g_step, self.log)
        self.log.count(g_step)


class ReducedLogger(Logger):
    """The logged stats are the mean over the processes' shards: the whole batch's."""

    def __init__(self, name: str, device: torch.device, world: int):
        super().__init__(name, device)
        self.world = world

    def flush(self, step: int, epoch: int):
        if self.nd:
            both = torch.cat([self.d_sum, self.g_sum.reshape(1)])
            dist.all_reduce(both)
            both /= self.world
            self.d_sum.copy_(both[:-1])
            self.g_sum.copy_(both[-1])
        return super().flush(step, epoch)


# --------------------------------------------------------------------------------------------------- BatchNorm
class SyncBatchNormCPU(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are over the global batch of all processes (gloo, CPU): the sum, then
    the squared deviations from the global mean, each all-reduced with autograd (torch.distributed.nn), so that
    the gradients flow through the statistics as in one process. Eval mode uses the running statistics."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: Tensor) -> Tensor:
        from torch.distributed.nn.functional import all_reduce

        if not self.training:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            False, 0.0, self.eps)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        n = x.numel() // x.shape[1] * dist.get_world_size()
        mean = all_reduce(x.sum(dims)) / n
        xc = x - mean.view(shape)
        var = all_reduce((xc * xc).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        out = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        out = SyncBatchNormCPU(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats, device=device)
        if module.affine:  # the same Parameter objects: the optimisers already hold them
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for child_name, child in module.named_children():
        out.add_module(child_name, sync_batchnorm(child, device))
    return out
