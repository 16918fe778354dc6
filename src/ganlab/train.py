"""The training engine: one model-agnostic GAN step and the loop around it.

Every variant runs through `fit`. They differ only by config: the loss pair, how D is updated (`joint`: one step
on real + fake terms, as CS231n and the DCGAN tutorial; `split`: the book's two steps, real then fake), `n_critic`,
whether G steps on a fresh latent batch or on the D step's fake batch (`g_noise`), and the optimisers.

A "step" consumes one real batch and updates D once; G is updated after every `n_critic` steps.
All randomness of the loop (permutations, latents, labels, penalty interpolates) comes from one torch.Generator
on the training device, saved in each checkpoint, so a killed run resumes to bitwise the same weights on CPU.

A step's maths is `iteration`; `Steps` runs it eagerly (the default), `GraphedSteps` replays it as a captured CUDA
graph (`train.cuda_graph`), drawing the same random numbers in the same order, so both give the same weights.
The other speed settings (`tf32`, `cudnn_benchmark`, `fused`, `compile`, `precision`, `channels_last`) change
kernels, not the schedule; all are off by default.
"""

from __future__ import annotations

import json
import math
import resource
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ganlab import mlp_steps
from ganlab.checkpoint import Progress, announce, resume
from ganlab.checkpoint import save as save_checkpoint
from ganlab.config import ConfigError, TrainCfg, Variant
from ganlab.data.load import Dataset, load_dataset
from ganlab.images import make_grid, save_png
from ganlab.io import atomic_torch_save, atomic_write
from ganlab.losses import Loss, get_loss, gradient_penalty
from ganlab.models import build_models

LOG_COLUMNS = ("step", "epoch", "d_loss", "d_real", "d_fake", "d_gp", "g_loss", "d_x", "d_gz")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


@dataclass
class RunPaths:
    data_dir: Path  # where <dataset>.h5 lives
    models: Path  # generator.pt, discriminator.pt
    metrics: Path  # train.json
    plots: Path  # losses.csv
    samples: Path  # fixed-noise grid per epoch
    checkpoints: Path  # last.pt (persists across DVC runs so a killed run resumes)

    @classmethod
    def for_variant(cls, name: str, root: Path = Path("."), data_dir: Path = Path("data/processed")) -> "RunPaths":
        return cls(data_dir, root / "models" / name, root / "metrics" / name, root / "plots" / name,
                   root / "samples" / name / "progress", root / "checkpoints" / name)


class Tracker:
    """What the loop tells the outside world; the default does nothing. (MLflow plugs in here.)"""

    def start(self, cfg: Variant, resumed_run_id: Optional[str], total_steps: int = 0) -> Optional[str]:
        return None

    def log_rows(self, rows: list[dict[str, float]]) -> None: ...

    def log_grid(self, epoch: int, step: int, grid: np.ndarray) -> None: ...

    def log_outputs(self, paths: "RunPaths", cfg: Variant, data_shape: tuple[int, ...]) -> None: ...

    def end(self, metrics: dict[str, Any], status: str) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but CUDA is not available here; use 'auto' or 'cpu'")
    return device


# --------------------------------------------------------------------------------------------------- the step
@dataclass
class GAN:
    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    loss: Loss
    cfg: Variant
    rng: torch.Generator

    def autocast(self) -> torch.autocast:
        """Forward passes in bf16 when `train.precision: bf16` (weights, optimiser and losses stay fp32). No cast
        cache: a captured CUDA graph must not hold on to casts made outside it (each region is one or two passes)."""
        return torch.autocast(self.rng.device.type, dtype=torch.bfloat16,
                              enabled=self.cfg.train.precision == "bf16", cache_enabled=False)

    def latent(self, n: int, rng: Optional[torch.Generator] = None) -> tuple[Tensor, Optional[Tensor]]:
        """A latent batch (n, nz) from the variant's seed distribution, and random labels when conditional."""
        m, dev, rng = self.cfg.model, self.rng.device, rng or self.rng
        shape = (n, m.nz)
        z = {"const": lambda: torch.full(shape, 0.5, device=dev),
             "rand": lambda: torch.rand(shape, device=dev, generator=rng),
             "randn": lambda: torch.randn(shape, device=dev, generator=rng),
             "uniform": lambda: torch.rand(shape, device=dev, generator=rng) * 2 - 1}[m.latent]()
        y = torch.randint(0, m.n_classes, (n,), device=dev, generator=rng) if m.n_classes else None
        return z, y


@dataclass
class Draws:
    """The randomness of one iteration, in the order its steps use it: D's fake batch (z_d, y_d), the penalty's
    interpolation weights (eps), G's fresh batch (z_g, y_g). Drawn before the maths rather than inside it, so that a
    captured CUDA graph replays the same maths on new draws, and every way of running a step consumes the one
    random stream alike."""

    z_d: Tensor
    y_d: Optional[Tensor]
    eps: Optional[Tensor]
    z_g: Optional[Tensor]
    y_g: Optional[Tensor]


def draw(gan: GAN, real_shape: tuple[int, ...], g_step: bool, rng: Optional[torch.Generator] = None) -> Draws:
    n, rng = real_shape[0], rng or gan.rng
    z_d, y_d = gan.latent(n, rng)
    eps = (torch.rand((n,) + (1,) * (len(real_shape) - 1), device=z_d.device, generator=rng)
           if gan.loss.penalty else None)
    z_g, y_g = gan.latent(n, rng) if g_step and gan.cfg.train.g_noise == "fresh" else (None, None)
    return Draws(z_d, y_d, eps, z_g, y_g)


def full(t: Tensor) -> Tensor:
    """A forward pass's output in the run's full precision (torch's default dtype: float32, or float64 under
    `precision: fp64`), for the losses: bf16 autocast's scores are cast up."""
    return t.to(torch.get_default_dtype())


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


def _step(opt: torch.optim.Optimizer, loss: Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


D_PARTS = ("d_real", "d_fake", "d_gp", "d_x", "d_gz")  # the order of d_update's stats vector


def d_update(gan: GAN, real: Tensor, y: Optional[Tensor], r: Draws) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Update D on real (target "real") and `fake.detach()` (target "fake").
    Returns the stats vector (D_PARTS, detached; one tensor so that logging costs one op per step), and the fake
    batch with its labels for `g_noise: reuse`."""
    G, D, L = gan.G, gan.D, gan.loss
    split = gan.cfg.train.d_update == "split"
    with gan.autocast():
        s_real = full(D(real, y))
    d_real = L.d_real(s_real)
    if split:  # the book: D.train(real, 1) is its own optimiser step ...
        _step(gan.opt_d, d_real)
    with gan.autocast():
        fake = G(r.z_d, r.y_d)  # (B, ...) keeps its graph to G for `reuse`
        s_fake = full(D(fake.detach(), r.y_d))
        gp = (gan.cfg.model.gp_lambda * gradient_penalty(D, real, fake.detach(), y, r.eps)
              if L.penalty else real.new_zeros(()))
    d_fake = L.d_fake(s_fake)
    # ... and D.train(G(seed).detach(), 0) another; joint: one step on the sum (CS231n, DCGAN tutorial).
    _step(gan.opt_d, d_fake + gp if split else d_real + d_fake + gp)
    stats = torch.stack([d_real, d_fake, full(gp), L.link(s_real).mean(), L.link(s_fake).mean()]).detach()
    return stats, fake, r.y_d


def g_update(gan: GAN, fake: Tensor, y_fake: Optional[Tensor], r: Draws) -> Tensor:
    """Update G through D with target "real": on a fresh latent batch (the book, CS231n), or on the D step's fake
    batch (`reuse`, the DCGAN tutorial). Returns G's loss, detached."""
    gan.D.requires_grad_(False)  # D's gradients from this step would be discarded anyway
    with gan.autocast():
        if gan.cfg.train.g_noise == "fresh":
            fake, y_fake = gan.G(r.z_g, r.y_g), r.y_g
        g_loss = gan.loss.g(full(gan.D(fake, y_fake)))
    _step(gan.opt_g, g_loss)
    gan.D.requires_grad_(True)
    return g_loss.detach()


def iteration(gan: GAN, real: Tensor, y: Optional[Tensor], r: Draws, g_step: bool, log: "Logger") -> None:
    """One step: D's update on this real batch, then G's when it is due; their stats are added to `log`'s sums on
    the device. No host synchronisation and no randomness inside, so it can be captured as a CUDA graph."""
    stats, fake, y_fake = d_update(gan, real, y, r)
    log.add_d(stats)
    if g_step:
        log.add_g(g_update(gan, fake, y_fake, r))


# --------------------------------------------------------------------------------------------------- set-up
def make_optimizer(params: Any, cfg: Variant, lr: float) -> torch.optim.Optimizer:
    """SGD or Adam; `fused` picks the one-kernel implementation, else the multi-tensor (foreach) one. A captured
    Adam keeps its step count on the device (capturable)."""
    t = cfg.train
    kernels = {"fused": True} if t.fused else {"foreach": True}
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, **kernels)
    return torch.optim.Adam(params, lr=lr, betas=t.betas, capturable=t.cuda_graph, **kernels)


def set_backends(t: TrainCfg) -> None:
    """The process-wide switches of `train`: TF32 (false: strict fp32 in matmuls and cuDNN convolutions, as the
    sources' pre-Ampere GPUs computed) and cuDNN's autotuner."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = t.tf32
    torch.backends.cudnn.benchmark = t.cudnn_benchmark


def build_gan(cfg: Variant, data_shape: tuple[int, ...], device: torch.device) -> GAN:
    torch.manual_seed(cfg.train.seed)  # initialisation comes from the global RNG, on the CPU, on every device
    dtype = torch.get_default_dtype()  # float64 inside an fp64 run's `fit`; float32 for sampling and evaluation
    with run_dtype("fp32"):  # an fp64 run starts from the fp32 run's weights, cast
        G, D = build_models(cfg.model, data_shape)
    G, D = G.to(device, dtype), D.to(device, dtype)
    if cfg.train.channels_last:  # NHWC weights; batches are made NHWC in Dataset.batch
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    if cfg.train.compile:  # in place: the modules, their state_dict keys and checkpoints stay as they are
        G.compile()
        D.compile()
    rng = torch.Generator(device).manual_seed(cfg.train.seed)
    return GAN(G, D, make_optimizer(G.parameters(), cfg, cfg.train.lr_g),
               make_optimizer(D.parameters(), cfg, cfg.train.lr_d), get_loss(cfg.model.loss), cfg, rng)


def fixed_latent(gan: GAN) -> tuple[Tensor, Optional[Tensor]]:
    """The grid's latent batch: the same for every epoch (and every run with this seed), drawn from its own RNG."""
    m, n = gan.cfg.model, gan.cfg.train.grid_size
    keep = gan.rng
    gan.rng = torch.Generator(keep.device).manual_seed(gan.cfg.train.seed + 1)
    z, _ = gan.latent(n)
    gan.rng = keep
    y = torch.arange(n, device=z.device) % m.n_classes if m.n_classes else None  # conditional: digits in order
    return z, y


@torch.no_grad()
def generate(G: nn.Module, z: Tensor, y: Optional[Tensor]) -> Tensor:
    """G's samples in train mode, as the sources draw them (batch statistics in BatchNorm), without touching its
    running statistics: momentum 0 keeps them as they are."""
    bns = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        return G(z, y)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


def picture(data: Dataset, samples: Tensor) -> np.ndarray:
    """Samples as a uint8 picture: an image grid, or for vectors one row per sample (values in [0,1] stretched)."""
    if samples.dim() == 4:
        return make_grid(data.unscale(samples))
    v = samples.detach().float().cpu()
    lo, hi = v.min(), v.max()
    return ((v - lo) / (hi - lo + 1e-12) * 255).round().to(torch.uint8).numpy()


# --------------------------------------------------------------------------------------------------- the loop
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


def plan(cfg: Variant, n: int) -> tuple[int, int]:
    """(steps per epoch, total steps)."""
    b = cfg.train.batch_size
    if b > n:
        raise ConfigError(f"train.batch_size {b} is larger than the {n} training samples")
    per_epoch = n // b if cfg.train.drop_last else math.ceil(n / b)
    total = per_epoch * cfg.train.epochs
    return per_epoch, min(total, cfg.train.max_steps or total)


def run_epoch(gan: GAN, data: Dataset, prog: Progress, log: Logger, steps: Steps, per_epoch: int, total: int,
              ckpt: Optional[Path], tracker: Tracker, bar: tqdm) -> None:
    t, b = gan.cfg.train, gan.cfg.train.batch_size
    if prog.perm is None:  # a fresh epoch; a resumed one keeps the order it started with
        n = len(data)
        prog.perm = (torch.randperm(n, device=gan.rng.device, generator=gan.rng) if t.shuffle
                     else torch.arange(n, device=gan.rng.device))
    while prog.step < total and prog.step - prog.epoch * per_epoch < per_epoch:
        i = prog.step - prog.epoch * per_epoch
        steps(prog.perm[i * b:(i + 1) * b], g_step=(prog.step + 1) % t.n_critic == 0)
        prog.step += 1
        bar.update(1)
        checkpoint = prog.step % t.checkpoint_every == 0 and prog.step < total
        # Flush at checkpoints too, so a resumed run logs exactly the rows an uninterrupted one does.
        if prog.step % t.log_every == 0 or prog.step == total or checkpoint:
            row = log.flush(prog.step, prog.epoch + 1)
            if row:
                prog.rows.append(row)
                tracker.log_rows([row])
                bar.set_postfix(D=f"{row['d_loss']:.3f}", G=f"{row['g_loss']:.3f}",
                                Dx=f"{row['d_x']:.2f}", DGz=f"{row['d_gz']:.2f}", refresh=False)
        if checkpoint and ckpt is not None:  # None: a data-parallel rank other than 0
            save_checkpoint(ckpt, gan, prog)


def fit(cfg: Variant, name: str, paths: RunPaths, tracker: Tracker = Tracker(),
        overrides: Optional[dict[str, Any]] = None, par: Any = None) -> dict[str, Any]:
    """Train one variant (resuming an unfinished checkpoint of the same config), write its outputs, return metrics.
    train.json also records the effective config and the global `overrides` that shaped it ({key: value}).
    `par`: this process's ganlab.distributed.Parallel in a data-parallel run (train.nproc > 1), else None.

    The order makes every kill recoverable: the checkpoint is marked complete (with the summary) before any
    output is written or the MLflow run is finished, so a run killed after its last step finishes from there.
    A `precision: fp64` run computes in float64 throughout (torch's default dtype for the run); its outputs load
    into the usual float32 modules."""
    with run_dtype(cfg.train.precision):
        return _fit(cfg, name, paths, tracker, overrides, par)


def _fit(cfg: Variant, name: str, paths: RunPaths, tracker: Tracker, overrides: Optional[dict[str, Any]],
         par: Any) -> dict[str, Any]:
    device = par.device if par else resolve_device(cfg.train.device)
    if cfg.train.cuda_graph and device.type != "cuda":
        raise ConfigError(f"train.cuda_graph is true but training runs on {device}: CUDA graphs need a CUDA "
                          f"device; set train.cuda_graph: false (or run where a GPU is)")
    if cfg.train.engine == "manual" and (why := mlp_steps.supported(cfg)):
        raise ConfigError(f"train.engine is 'manual' but the hand-written step cannot run this variant: {why}; "
                          f"set train.engine: auto")
    set_backends(cfg.train)
    data = load_dataset(cfg.data, paths.data_dir, device)
    per_epoch, total = plan(cfg, len(data))
    gan = build_gan(cfg, data.shape, device)
    if par:
        par.wrap(gan)
    ckpt = paths.checkpoints / "last.pt"
    prog = resume(ckpt, gan) or Progress()
    announce(name, prog, total, ckpt)
    fixed_z, fixed_y = fixed_latent(gan)
    writer = par is None or par.rank == 0  # only rank 0 writes outputs (and its tracker alone logs)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    prog.run_id = tracker.start(cfg, prog.run_id, total)
    if prog.step == 0:  # the untrained generator's grid: step 0 of the tracker's image slider (no DVC output)
        tracker.log_grid(0, 0, picture(data, generate(gan.G, fixed_z, fixed_y)))
    if prog.rows:  # a resumed run's rows the store may lack (the tracker skips the steps it has)
        tracker.log_rows(prog.rows)
    try:
        if not prog.complete:
            train_steps(gan, data, prog, per_epoch, total, ckpt if writer else None, tracker, name, fixed_z,
                        fixed_y, par)
            prog.complete, prog.metrics = True, summary(cfg, name, prog, device, len(data), per_epoch)
            prog.metrics.update(config=cfg.model_dump(mode="json"), overrides=overrides or {})
            if writer:
                save_checkpoint(ckpt, gan, prog)
        prog.metrics["run_id"] = prog.run_id  # a finishing run's MLflow run may be new (the store lost the old one)
        if writer:
            write_outputs(gan, data, prog, prog.metrics, paths)
        tracker.log_outputs(paths, cfg, data.shape)
    except BaseException as exc:
        tracker.end({}, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    tracker.end(prog.metrics, "FINISHED")
    prog.finished = True
    if writer:
        save_checkpoint(ckpt, gan, prog)
    return prog.metrics


def train_steps(gan: GAN, data: Dataset, prog: Progress, per_epoch: int, total: int, ckpt: Optional[Path],
                tracker: Tracker, name: str, fixed_z: Tensor, fixed_y: Optional[Tensor], par: Any = None) -> None:
    """The loop from `prog` to the last step; `prog.wall_s` adds this segment's time to the earlier ones'.
    `ckpt` None: a data-parallel rank other than 0, which writes no checkpoint."""
    cfg, device = gan.cfg, gan.rng.device
    log = (par.logger if par else Logger)(name, device)
    prog.start_clock()
    steps = par.steps(gan, data, log) if par else step_runner(gan, data, log)  # capture fails the run too
    with cpu_threads(training_threads(cfg.train, device)):
        while prog.step < total:
            with tqdm(total=min(per_epoch, total - prog.epoch * per_epoch),
                      initial=prog.step - prog.epoch * per_epoch,
                      desc=f"{name} epoch {prog.epoch + 1}/{cfg.train.epochs}", file=sys.stderr,
                      mininterval=1.0, dynamic_ncols=True) as bar:
                run_epoch(gan, data, prog, log, steps, per_epoch, total, ckpt, tracker, bar)
            end_epoch(gan, data, prog, fixed_z, fixed_y, tracker)
    prog.stop_clock()


def end_epoch(gan: GAN, data: Dataset, prog: Progress, z: Tensor, y: Optional[Tensor], tracker: Tracker) -> None:
    """Record the fixed-noise samples of the epoch just finished (or cut short by max_steps) and move on."""
    samples = generate(gan.G, z, y)
    epoch = prog.epoch + 1
    prog.grids[epoch] = picture(data, samples)
    if samples.dim() == 2:
        prog.samples[epoch] = samples.cpu().tolist()
    tracker.log_grid(epoch, prog.step, prog.grids[epoch])
    prog.epoch, prog.perm = epoch, None


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"


def images_trained(cfg: Variant, n: int, per_epoch: int, steps: int) -> int:
    """Real images consumed by `steps` steps, exactly: an epoch is n images, or per_epoch full batches when
    drop_last drops the partial one; a short last batch (drop_last: false) counts its true size."""
    b = cfg.train.batch_size
    per_pass = per_epoch * b if cfg.train.drop_last else n
    full, rest = divmod(steps, per_epoch)
    return full * per_pass + min(rest * b, per_pass)


def summary(cfg: Variant, name: str, prog: Progress, device: torch.device, n: int,
            per_epoch: int) -> dict[str, Any]:
    """train.json. `epochs_done` is steps / steps per epoch (a run cut by max_steps ends inside an epoch), so an
    epoch whose partial batch drop_last drops still counts as one; `images_seen` counts the images really used."""
    last = prog.rows[-1]
    images = images_trained(cfg, n, per_epoch, prog.step)
    mem, mem_kind = peak_memory(device)
    return {"variant": name, "d_loss": last["d_loss"], "g_loss": last["g_loss"], "d_x": last["d_x"],
            "d_gz": last["d_gz"], "steps": prog.step, "epochs": prog.epoch,
            "steps_per_epoch": per_epoch, "epochs_done": round(prog.step / per_epoch, 4), "n_train": n,
            "batch_size": cfg.train.batch_size, "images_seen": images,
            "wall_time_s": round(prog.wall_s, 3), "images_per_s": round(images / max(prog.wall_s, 1e-9), 1),
            "peak_memory_bytes": mem, "peak_memory_kind": mem_kind, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "run_id": prog.run_id}


def write_outputs(gan: GAN, data: Dataset, prog: Progress, metrics: dict[str, Any], paths: RunPaths) -> None:
    for net, fname in ((gan.G, "generator.pt"), (gan.D, "discriminator.pt")):
        atomic_torch_save(net.state_dict(), paths.models / fname)
    atomic_write(paths.metrics / "train.json", json.dumps(metrics, indent=2) + "\n")
    lines = [",".join(LOG_COLUMNS)] + [",".join(f"{r[c]:.6g}" for c in LOG_COLUMNS) for r in prog.rows]
    atomic_write(paths.plots / "losses.csv", "\n".join(lines) + "\n")
    for epoch, grid in prog.grids.items():
        save_png(grid, paths.samples / f"epoch_{epoch:03d}.png")
    for epoch, rows in prog.samples.items():
        atomic_write(paths.samples / f"epoch_{epoch:03d}.csv",
                     "\n".join(",".join(f"{v:.6g}" for v in r) for r in rows) + "\n")
