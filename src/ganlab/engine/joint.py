"""Many seeds at the price of one: a variant's S seeds trained together, as one batched computation.

`fit_joint` has `fit`'s contract once per seed: seed s's models, checkpoint, losses, grids and MLflow run (its own
`Tracker`) are those of `fit` with `train.seed: s`. Each seed keeps its own torch.Generator (data order, latents,
penalty weights, drawn in the order `step.draw` draws them), its own BatchNorm statistics and its own optimiser
state; the maths runs on the S networks stacked along a leading dim (`ganlab.engine.stacked`): one batched product
per layer, one optimiser update per network, one kernel launch where the sequential loop makes S.

Each seed's checkpoint is an ordinary one-seed checkpoint (written from the stack), so a killed joint run resumes
every seed exactly, and a seed can be resumed alone by `fit`. A seed whose loss becomes NaN stops: its MLflow run
ends FAILED, its rows stop, the others train on (its rows of the stack keep computing, harmlessly: nothing mixes
seeds), and its entry in the result says so ({"status": "failed", "seed", "error"}, as `train.fit_seeds` records
a failed seed).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from tqdm import tqdm

from ganlab.config import Variant
from ganlab.data.load import Dataset, load_dataset
from ganlab.engine.checkpoint import Progress, announce, resume
from ganlab.engine.checkpoint import save as save_checkpoint
from ganlab.engine.contract import RunPaths, Tracker, TrainingDiverged
from ganlab.engine.gan import GAN, build_gan, fixed_latent, generate, make_optimizer
from ganlab.engine.interrupt import Stopped, stop_requested
from ganlab.engine.outputs import end_epoch, picture, plan, summary, write_outputs
from ganlab.engine.runners import Logger
from ganlab.engine.settings import cpu_threads, resolve_device, run_dtype, set_backends, training_threads
from ganlab.engine.stacked import StackedMlp, opt_from_seeds, opt_to_seeds
from ganlab.engine.step import D_PARTS, draw


def supported(cfg: Variant) -> Optional[str]:
    """None when the variant's seeds can train jointly, else why they train one after another."""
    m, t = cfg.model, cfg.train
    reasons = [
        (m.arch != "mlp", f"model.arch is {m.arch!r}: convolutional families train one seed after another "
                          f"(bench/README.md: grouped convolutions gave no gain on the 2-core CPU)"),
        (t.precision == "bf16", "train.precision is bf16 (the joint path runs fp32 or fp64)"),
        (t.compile, "train.compile is on"),
        (t.cuda_graph, "train.cuda_graph is on"),
        (t.nproc > 1, "train.nproc > 1 (data-parallel)"),
    ]
    why = [r for bad, r in reasons if bad]
    return "; ".join(why) if why else None


def worthwhile(cfg: Variant) -> Optional[str]:
    """None when training the seeds jointly is measured (or, on a GPU, expected) to be faster than one after
    another, else why not; `train.fit_seeds` trains jointly under `train.joint: auto` only when this and
    `supported` are both None (`on` skips this check). Measured on the busy 2-core VM (bench/README.md, "Seeds
    trained together"): 5 seeds of mnist_vanilla jointly took 1.18x one seed's wall time but 5.0x its CPU time (no
    arithmetic saved on a CPU), and at batch 1 the joint autograd step is ~10x one seed's hand-written step. So on
    a CPU seeds train one after another, which also keeps each seed bitwise the single run of that seed. On a GPU
    they train together (on paper: S small kernels become one; no GPU was lent to measure it). In float32 their
    scores were not told apart from those of seeds one after another: mnist_vanilla, 10 seeds each way on the full
    MNIST, one evaluator: FID 186.8 against 177.0 on average, no verdict (Welch's 95 % interval of the difference
    -5.8 to +25.5: a gap up to that size is not ruled out; bench/README.md: a first 5 seeds had looked worse
    jointly, the next 5 did not)."""
    if resolve_device(cfg.train.device).type == "cuda":
        return None
    if cfg.train.batch_size == 1:
        return ("at batch 1 on a CPU the one-seed hand-written step run once per seed is faster than the joint "
                "autograd step (5 seeds of mnist_mlp: 10x one seed's wall time jointly against 5x in sequence, "
                "bench/README.md)")
    return ("on a CPU the joint step saves no arithmetic (5 seeds of mnist_vanilla: 5.0x one seed's CPU time, "
            "bench/README.md) and its float32 rounding differs from a single run's; train.joint: on forces it")


class JointSteps:
    """`step.iteration` for S seeds at once: the same order (D on real, [its own step], G, D on the detached fake,
    D's step, G's step through D), the losses per seed (vmap over the loss registry's functions), their sum
    backpropagated (each seed's rows get only its own gradient)."""

    def __init__(self, gans: list[GAN], data: Dataset):
        cfg = gans[0].cfg
        self.gans, self.data, self.cfg, self.loss = gans, data, cfg, gans[0].loss
        self.G, self.D = StackedMlp([g.G for g in gans]), StackedMlp([g.D for g in gans])
        self.opt_g = make_optimizer(self.G.params, cfg, cfg.train.lr_g)
        self.opt_d = make_optimizer(self.D.params, cfg, cfg.train.lr_d)
        dev = gans[0].rng.device
        self.d_sum = torch.zeros(len(gans), len(D_PARTS), device=dev)  # the seeds' Loggers read their rows
        self.g_sum = torch.zeros(len(gans), device=dev)
        self.per_seed = {k: torch.vmap(getattr(self.loss, k)) for k in ("d_real", "d_fake", "g")}

    def load(self) -> None:
        """The stack from the seeds' modules and optimisers (fresh or resumed)."""
        self.G.from_modules([g.G for g in self.gans])
        self.D.from_modules([g.D for g in self.gans])
        opt_from_seeds(self.opt_g, self.G, [g.opt_g for g in self.gans])
        opt_from_seeds(self.opt_d, self.D, [g.opt_d for g in self.gans])

    def store(self) -> None:
        """The seeds' modules and optimisers from the stack (for a checkpoint, a grid, the outputs)."""
        self.G.to_modules([g.G for g in self.gans])
        self.D.to_modules([g.D for g in self.gans])
        opt_to_seeds(self.opt_g, self.G, [g.opt_g for g in self.gans])
        opt_to_seeds(self.opt_d, self.D, [g.opt_d for g in self.gans])

    @staticmethod
    def _step(opt: torch.optim.Optimizer, loss: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()

    def __call__(self, idx: Tensor, g_step: bool) -> None:
        """idx (S, B): each seed's batch indices."""
        S, B = idx.shape
        real, y = self.data.batch(idx.reshape(-1))
        real = real.unflatten(0, (S, B))
        y = None if y is None else y.view(S, B)
        rs = [draw(g, tuple(real.shape[1:]), g_step) for g in self.gans]  # each seed's own stream, in its order
        r = {k: None if getattr(rs[0], k) is None else torch.stack([getattr(x, k) for x in rs])
             for k in vars(rs[0])}
        L, G, D, split = self.loss, self.G, self.D, self.cfg.train.d_update == "split"
        s_real = D(real, y)
        d_real = self.per_seed["d_real"](s_real)  # (S,)
        if split:
            self._step(self.opt_d, d_real)
        fake = G(r["z_d"], r["y_d"])
        s_fake = D(fake.detach(), r["y_d"])
        gp = (self.cfg.model.gp_lambda * self._penalty(real, fake.detach(), y, r["eps"]) if L.penalty
              else real.new_zeros(S))
        d_fake = self.per_seed["d_fake"](s_fake)
        self._step(self.opt_d, d_fake + gp if split else d_real + d_fake + gp)
        self.d_sum.add_(torch.stack([d_real, d_fake, gp, L.link(s_real).mean(1), L.link(s_fake).mean(1)], 1)
                        .detach())
        if g_step:
            D.requires_grad_(False)
            y_fake = r["y_d"]
            if self.cfg.train.g_noise == "fresh":
                fake, y_fake = G(r["z_g"], r["y_g"]), r["y_g"]
            g_loss = self.per_seed["g"](D(fake, y_fake))
            self._step(self.opt_g, g_loss)
            D.requires_grad_(True)
            self.g_sum.add_(g_loss.detach())

    def _penalty(self, real: Tensor, fake: Tensor, y: Optional[Tensor], eps: Tensor) -> Tensor:
        """`losses.gradient_penalty` per seed: (S,)."""
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.D(x_hat, y).sum(), x_hat, create_graph=True)
        return ((grad.flatten(2).norm(2, dim=2) - 1) ** 2).mean(1)


@dataclass
class Seed:
    """One seed's side of a joint run: what `fit` holds for its single run."""

    seed: int
    gan: GAN
    prog: Progress
    paths: RunPaths
    ckpts: list[Path]  # the DVC output, then the copy `dvc exp run`'s checkout cannot reach (fit's two)
    tracker: Tracker
    fixed: tuple[Tensor, Optional[Tensor]]
    log: Optional[Logger] = None
    failed: Optional[str] = None


def seed_config(cfg: Variant, seed: int) -> Variant:
    """The one-seed run's config (`train.seeds: 1` where the config has multi-seed runs)."""
    one = {"seed": seed, **({"seeds": 1} if "seeds" in type(cfg.train).model_fields else {})}
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=one)})


def fit_joint(cfg: Variant, name: str, seeds: list[int], paths: Callable[[int], RunPaths],
              tracker: Callable[[int], Tracker], overrides: Optional[dict[str, Any]] = None) -> dict[int, dict]:
    """Train `seeds` of one variant together. Returns {seed: {"status": "ok", **train.json}} as `fit` writes it
    for `train.seed: s`, or {"status": "failed", "seed": s, "error": ...} for a seed that diverged."""
    why = supported(cfg)
    if why:
        raise ValueError(f"{name}: its seeds cannot train jointly: {why}")
    with run_dtype(cfg.train.precision):
        return _fit_joint(cfg, name, seeds, paths, tracker, overrides)


def _fit_joint(cfg, name, seeds, paths, tracker, overrides) -> dict[int, dict]:
    device = resolve_device(cfg.train.device)
    set_backends(cfg.train)
    data = load_dataset(cfg.data, paths(seeds[0]).data_dir, device)
    per_epoch, total = plan(cfg, len(data))
    runs = []
    for s in seeds:
        gan = build_gan(seed_config(cfg, s), data.shape, device)
        p = paths(s)
        copy = p.resume_copy(gan.cfg.model_dump(mode="json"))
        ckpts = [p.checkpoint, *([copy] if copy else [])]
        # keep_finished, as fit_seeds: a rerun after a kill trains only the seeds that had not finished
        prog = resume(ckpts, gan, keep_finished=True) or Progress()
        announce(f"{name} seed {s}", prog, total, p.checkpoint)
        run = Seed(s, gan, prog, p, ckpts, tracker(s), fixed_latent(gan))
        prog.run_id = run.tracker.start(gan.cfg, prog.run_id, total)
        if prog.step == 0:
            run.tracker.log_grid(0, 0, picture(data, generate(gan.G, *run.fixed)))
        if prog.rows:
            run.tracker.log_rows(prog.rows)
        runs.append(run)
    try:
        todo = [r for r in runs if not r.prog.complete]
        for step in sorted({r.prog.step for r in todo}):  # seeds a kill left at different steps: one group each
            train_group([r for r in todo if r.prog.step == step], data, per_epoch, total, name)
        results = {}
        for r in runs:
            if r.failed:
                results[r.seed] = {"status": "failed", "seed": r.seed, "error": f"TrainingDiverged: {r.failed}"}
            else:
                results[r.seed] = {"status": "ok", **finish(r, data, per_epoch, device, name, overrides)}
    except BaseException as exc:
        for r in runs:
            if not r.failed and not r.prog.finished:
                r.tracker.end({}, "KILLED" if isinstance(exc, (KeyboardInterrupt, Stopped)) else "FAILED")
        raise
    return results


def train_group(runs: list[Seed], data: Dataset, per_epoch: int, total: int, name: str) -> None:
    """The loop of `train.train_steps`/`run_epoch` for seeds at the same step, on one stack."""
    t, b = runs[0].gan.cfg.train, runs[0].gan.cfg.train.batch_size
    steps = JointSteps([r.gan for r in runs], data)
    steps.load()
    for i, r in enumerate(runs):
        r.log = Logger(f"{name} seed {r.seed}", r.gan.rng.device)
        r.log.d_sum, r.log.g_sum = steps.d_sum[i], steps.g_sum[i]  # views: the joint step adds, each seed flushes
        r.prog.start_clock()
    first = runs[0].prog
    with cpu_threads(training_threads(t, first.perm.device if first.perm is not None else runs[0].gan.rng.device)):
        while first.step < total:
            for r in runs:
                if r.prog.perm is None:  # a fresh epoch: each seed's own order, from its own generator
                    n = len(data)
                    r.prog.perm = (torch.randperm(n, device=r.gan.rng.device, generator=r.gan.rng) if t.shuffle
                                   else torch.arange(n, device=r.gan.rng.device))
            with tqdm(total=min(per_epoch, total - first.epoch * per_epoch),
                      initial=first.step - first.epoch * per_epoch, file=sys.stderr, mininterval=1.0,
                      desc=f"{name} seeds {[r.seed for r in runs]} epoch {first.epoch + 1}/{t.epochs}",
                      dynamic_ncols=True) as bar:
                while first.step < total and first.step - first.epoch * per_epoch < per_epoch:
                    i = first.step - first.epoch * per_epoch
                    steps(torch.stack([r.prog.perm[i * b:(i + 1) * b] for r in runs]),
                          g_step=(first.step + 1) % t.n_critic == 0)
                    for r in runs:
                        r.prog.step += 1
                        r.log.count((first.step) % t.n_critic == 0)
                    bar.update(1)
                    record(steps, runs, total, t)
                    if stop_requested() and first.step < total:  # Ctrl-C: every seed saved at this step
                        steps.store()
                        for r in runs:
                            save_checkpoint(r.ckpts, r.gan, r.prog)
                        raise Stopped(first.step, total, runs[0].ckpts[0])
            steps.store()
            for r in runs:
                if not r.failed:
                    end_epoch(r.gan, data, r.prog, *r.fixed, r.tracker)
                else:
                    r.prog.epoch, r.prog.perm = r.prog.epoch + 1, None
            steps.load()  # the grid's forward pass in train mode counts in BatchNorm's num_batches_tracked
    for r in runs:
        r.prog.stop_clock()


def record(steps: JointSteps, runs: list[Seed], total: int, t) -> None:
    """Flush the seeds' rows and save their checkpoints when `run_epoch` would; a diverged seed stops here."""
    step = runs[0].prog.step
    checkpoint = step % t.checkpoint_every == 0 and step < total
    if step % t.log_every == 0 or step == total or checkpoint:
        for r in runs:
            if r.failed:
                continue
            try:
                row = r.log.flush(step, r.prog.epoch + 1)
            except TrainingDiverged as err:
                r.failed = str(err)
                r.tracker.end({}, "FAILED")
                print(f"{r.log.name}: diverged, the other seeds go on: {err}", file=sys.stderr)
                continue
            if row:
                r.prog.rows.append(row)
                r.tracker.log_rows([row])
    if checkpoint:
        steps.store()
        for r in runs:
            if not r.failed:
                save_checkpoint(r.ckpts, r.gan, r.prog)


def finish(r: Seed, data: Dataset, per_epoch: int, device: torch.device, name: str,
           overrides: Optional[dict[str, Any]]) -> dict[str, Any]:
    """`fit`'s ending for one seed: complete checkpoint, outputs, MLflow run finished, finished checkpoint."""
    prog, cfg = r.prog, r.gan.cfg
    if not prog.complete:
        prog.complete, prog.metrics = True, summary(cfg, name, prog, device, len(data), per_epoch)
        prog.metrics.update(config=cfg.model_dump(mode="json"), overrides=overrides or {})
        save_checkpoint(r.ckpts, r.gan, prog)
    prog.metrics["run_id"] = prog.run_id
    write_outputs(r.gan, data, prog, prog.metrics, r.paths)
    r.tracker.log_outputs(r.paths, cfg, data.shape)
    r.tracker.end(prog.metrics, "FINISHED")
    prog.finished = True
    save_checkpoint(r.ckpts, r.gan, prog)
    return prog.metrics
