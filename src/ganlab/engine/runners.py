"""The ways to run steps: eagerly (`Steps`, the reference), replayed as captured CUDA graphs (`GraphedSteps`), or
the hand-written MLP step (`mlp_steps.MlpSteps`), and the `Logger` that sums their stats on the device."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import Tensor

from ganlab.data.load import Dataset
from ganlab.engine import mlp_steps
from ganlab.engine.contract import LOG_COLUMNS, TrainingDiverged
from ganlab.engine.gan import GAN
from ganlab.engine.step import D_PARTS, draw, iteration


class Logger:
    """Sums the steps' stats on the device, in place (so a captured graph can add to the same buffers), and reads
    them back only when a row is due: one sync per row."""

    def __init__(self, name: str, device: torch.device):
        self.name = name
        self.d_sum = torch.zeros(len(D_PARTS), device=device)
        self.g_sum = torch.zeros((), device=device)
        self.nd = self.ng = 0

    def add_d(self, stats: Tensor) -> None:
        self.d_sum.add_(stats)

    def add_g(self, g_loss: Tensor) -> None:
        self.g_sum.add_(g_loss)

    def count(self, g_step: bool) -> None:
        """One more iteration has been added (on the host: a replayed graph adds without running this code)."""
        self.nd += 1
        self.ng += g_step

    def reset(self) -> None:
        self.d_sum.zero_()
        self.g_sum.zero_()
        self.nd = self.ng = 0

    def flush(self, step: int, epoch: int) -> Optional[dict[str, float]]:
        if not self.nd:
            return None
        row: dict[str, float] = {"step": step, "epoch": epoch}
        row.update(zip(D_PARTS, (v / self.nd for v in self.d_sum.tolist())))
        row["d_loss"] = row["d_real"] + row["d_fake"] + row["d_gp"]
        row["g_loss"] = self.g_sum.item() / self.ng if self.ng else math.nan
        for k in ("d_loss", "g_loss") if self.ng else ("d_loss",):
            if not math.isfinite(row[k]):
                raise TrainingDiverged(f"{self.name}: {k} became {row[k]} by step {step} (epoch {epoch}); "
                                       f"lower the learning rates, or try another loss (model.loss)")
        self.reset()
        return {k: row[k] for k in LOG_COLUMNS}


class Steps:
    """Runs iterations eagerly, one kernel launch per operation: the default, and the reference for GraphedSteps."""

    def __init__(self, gan: GAN, data: Dataset, log: Logger):
        self.gan, self.data, self.log = gan, data, log

    def __call__(self, idx: Tensor, g_step: bool) -> None:
        real, y = self.data.batch(idx, self.gan.cfg.train.channels_last)
        iteration(self.gan, real, y, draw(self.gan, real.shape, g_step), g_step, self.log)
        self.log.count(g_step)


class GraphedSteps(Steps):
    """`train.cuda_graph`: the whole iteration (batch gather, D's step or steps, G's step, the log sums) captured in
    a CUDA graph, one per kind of iteration (with and without G's step), and replayed: one launch per step instead
    of hundreds, which is what batch-1 book mode and the small MLPs wait on. Before each replay the batch indices
    and the draws are copied into the graph's static inputs, drawn from the run's generator as `Steps` draws them.

    Capture needs warm-up iterations (optimiser state, autograd's streams, cuDNN's choices); they run on static
    inputs from a throwaway generator and the models, optimisers and sums are then put back as they were, in place,
    so the run's numbers do not depend on the warm-up. `capture=False` runs the same static-input path without
    capturing (CPU; the tests compare it with `Steps`). A short last batch (drop_last: false) runs eagerly."""

    WARMUP = 3

    def __init__(self, gan: GAN, data: Dataset, log: Logger, capture: bool = True):
        super().__init__(gan, data, log)
        b, dev = gan.cfg.train.batch_size, gan.rng.device
        self.idx = torch.zeros(b, dtype=torch.long, device=dev)
        real, _ = data.batch(self.idx, gan.cfg.train.channels_last)
        self.real_shape = tuple(real.shape)
        self.static = draw(gan, self.real_shape, True, torch.Generator(dev).manual_seed(0))
        kinds = [True] if gan.cfg.train.n_critic == 1 else [False, True]  # does the iteration step G?
        self.graphs: dict[bool, torch.cuda.CUDAGraph] = {}
        with restored(gan, log):
            side = torch.cuda.Stream(dev) if capture else None  # warm up off the default stream, as capture wants
            if side:
                side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP):
                    for g_step in kinds:
                        self.run(g_step)
            if not side:
                return
            torch.cuda.current_stream(dev).wait_stream(side)
            for g_step in kinds:
                for opt in (gan.opt_g, gan.opt_d):  # the graph's backward allocates the grads from its own pool
                    opt.zero_grad(set_to_none=True)
                self.graphs[g_step] = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graphs[g_step]):
                    self.run(g_step)

    def run(self, g_step: bool) -> None:
        """The captured function: everything reads the static inputs."""
        real, y = self.data.batch(self.idx, self.gan.cfg.train.channels_last)
        iteration(self.gan, real, y, self.static, g_step, self.log)

    def __call__(self, idx: Tensor, g_step: bool) -> None:
        if idx.shape[0] != self.idx.shape[0]:
            return super().__call__(idx, g_step)
        self.idx.copy_(idx)
        fresh = draw(self.gan, self.real_shape, g_step)
        for name, value in vars(fresh).items():
            if value is not None:
                getattr(self.static, name).copy_(value)
        if self.graphs:
            self.graphs[g_step].replay()
        else:
            self.run(g_step)
        self.log.count(g_step)


@contextmanager
def restored(gan: GAN, log: Logger) -> Iterator[None]:
    """Put the models' parameters and buffers, the optimisers' state and the log sums back as they were on entry,
    in place (a captured graph holds their addresses). Optimiser state created inside is zeroed: that is its
    fresh value (Adam: step 0, zero moments)."""
    tensors = [*gan.G.parameters(), *gan.G.buffers(), *gan.D.parameters(), *gan.D.buffers()]
    saved = [t.detach().clone() for t in tensors]
    opt_saved = [{p: {k: v.clone() for k, v in st.items() if torch.is_tensor(v)} for p, st in opt.state.items()}
                 for opt in (gan.opt_g, gan.opt_d)]
    yield
    with torch.no_grad():
        for t, before in zip(tensors, saved):
            t.copy_(before)
        for opt, before in zip((gan.opt_g, gan.opt_d), opt_saved):
            for p, st in opt.state.items():
                for k, v in st.items():
                    if torch.is_tensor(v):
                        v.copy_(before[p][k]) if p in before else v.zero_()
    log.reset()


def step_runner(gan: GAN, data: Dataset, log: Logger) -> "Steps | mlp_steps.MlpSteps":
    """The way to run steps the config asks for: captured CUDA graphs, the hand-written MLP step (`engine: auto`
    where it applies, or `manual`), or autograd."""
    t = gan.cfg.train
    if t.cuda_graph:
        return GraphedSteps(gan, data, log)
    if t.engine != "autograd" and not mlp_steps.supported(gan.cfg):
        return mlp_steps.MlpSteps(gan, data, log)
    return Steps(gan, data, log)
