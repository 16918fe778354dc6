"""The training loop: `fit` trains one variant from its config, resumably, and writes its outputs.

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

import sys
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from tqdm import tqdm

from ganlab.config import ConfigError, Variant
from ganlab.data.load import Dataset, load_dataset
from ganlab.engine import joint, mlp_steps
from ganlab.engine.checkpoint import Progress, announce, resume
from ganlab.engine.checkpoint import save as save_checkpoint
from ganlab.engine.contract import RunPaths, Tracker, TrainingDiverged
from ganlab.engine.distributed import Parallel
from ganlab.engine.gan import GAN, build_gan, fixed_latent, generate
from ganlab.engine.interrupt import Stopped, stop_requested
from ganlab.engine.outputs import end_epoch, images_trained, picture, plan, summary, write_outputs
from ganlab.engine.runners import Logger, Steps, step_runner
from ganlab.engine.settings import cpu_threads, resolve_device, run_dtype, set_backends, training_threads
from ganlab.io import BadFile

__all__ = ["fit", "train_steps", "plan", "images_trained"]  # plan, images_trained: where callers found them


def run_epoch(gan: GAN, data: Dataset, prog: Progress, log: Logger, steps: Steps, per_epoch: int, total: int,
              ckpt: Optional[list[Path]], tracker: Tracker, bar: tqdm) -> None:
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
        # Ctrl-C (ganlab.engine.interrupt): stop after this whole step, with a checkpoint here. Its partial row is
        # logged, so the curve keeps every step (a resumed run's next row averages the steps after this one).
        stop = stop_requested() and ckpt is not None and prog.step < total
        checkpoint = checkpoint or stop
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
        if stop:
            raise Stopped(prog.step, total, ckpt[0])


def fit(cfg: Variant, name: str, paths: RunPaths, tracker: Tracker = Tracker(),
        overrides: Optional[dict[str, Any]] = None, par: Optional[Parallel] = None,
        keep_finished: bool = False) -> dict[str, Any]:
    """Train one variant (resuming an unfinished checkpoint of the same config), write its outputs, return metrics.
    train.json also records the effective config and the global `overrides` that shaped it ({key: value}).
    `par`: this process's Parallel in a data-parallel run (train.nproc > 1), else None.

    The order makes every kill recoverable: the checkpoint is marked complete (with the summary) before any
    output is written or the MLflow run is finished, so a run killed after its last step finishes from there.
    A `precision: fp64` run computes in float64 throughout (torch's default dtype for the run); its outputs load
    into the usual float32 modules. `keep_finished`: a finished checkpoint of this config is not trained again
    (its outputs are written from it), as for the seeds of a multi-seed stage that a kill interrupted."""
    with run_dtype(cfg.train.precision):
        return _fit(cfg, name, paths, tracker, overrides, par, keep_finished)


def fit_seeds(cfg: Variant, name: str, seeds: list[int], paths: Callable[[int], RunPaths],
              tracker: Callable[[int], Tracker], overrides: Optional[dict[str, Any]] = None,
              par: Optional[Parallel] = None) -> dict[int, dict[str, Any]]:
    """Train the variant under each seed, one after another: seed `s` is exactly `fit` of the variant with
    `train.seed: s` (and `train.seeds: 1`), so it gives the weights a single run of that seed gives. A seed that
    diverges or fails is recorded ({"status": "failed", "error": ...}) and the others go on; a mistake that would
    fail every seed alike (the config, a missing or bad file) stops at once, and so does Ctrl-C (`Stopped`: the
    seed in training keeps a checkpoint, the seeds after it do not start, and a rerun goes on from there).
    Returns {seed: train.json or failure}.

    Where the family allows it and it pays (joint.supported, joint.worthwhile) the seeds train together instead,
    as one stacked computation with the same per-seed results (docs/benchmarks.md); the log says which and why."""
    if len(seeds) > 1:
        why = (joint.supported(cfg) or (joint.worthwhile(cfg) if cfg.train.joint == "auto" else None)
               if par is None and cfg.train.joint != "off" else "train.joint is off, or a data-parallel run")
        if why is None:
            print(f"train@{name}: seeds {seeds} train together (one stacked computation)", file=sys.stderr)
            return joint.fit_joint(cfg, name, seeds, paths, tracker, overrides)
        print(f"train@{name}: seeds {seeds} train one after another: {why}", file=sys.stderr)
    results: dict[int, dict[str, Any]] = {}
    for s in seeds:
        one = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": s, "seeds": 1})})
        try:
            # keep_finished: a rerun after a kill trains only the seeds that had not finished
            results[s] = {"status": "ok", **fit(one, name, paths(s), tracker(s), overrides, par, keep_finished=True)}
        except (ConfigError, FileNotFoundError, BadFile, Stopped):  # Stopped: Ctrl-C stops the stage, not a seed
            raise
        except (TrainingDiverged, Exception) as err:  # not KeyboardInterrupt: a killed stage stops
            print(f"train@{name}: seed {s} failed: {type(err).__name__}: {err}", file=sys.stderr)
            results[s] = {"status": "failed", "seed": s, "error": f"{type(err).__name__}: {err}"}
    return results


def _fit(cfg: Variant, name: str, paths: RunPaths, tracker: Tracker, overrides: Optional[dict[str, Any]],
         par: Optional[Parallel], keep_finished: bool = False) -> dict[str, Any]:
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
    copy = paths.resume_copy(cfg.model_dump(mode="json"))  # beyond the reach of `dvc exp run`'s checkout
    ckpt = [paths.checkpoint, *([copy] if copy else [])]
    prog = resume(ckpt, gan, keep_finished) or Progress()
    announce(name, prog, total, paths.checkpoint)
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
        tracker.end({}, "KILLED" if isinstance(exc, (KeyboardInterrupt, Stopped)) else "FAILED")
        raise
    tracker.end(prog.metrics, "FINISHED")
    prog.finished = True
    if writer:
        save_checkpoint(ckpt, gan, prog)
    return prog.metrics


def train_steps(gan: GAN, data: Dataset, prog: Progress, per_epoch: int, total: int, ckpt: Optional[list[Path]],
                tracker: Tracker, name: str, fixed_z: Tensor, fixed_y: Optional[Tensor], par: Optional[Parallel] = None) -> None:
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
