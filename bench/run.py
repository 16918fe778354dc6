"""The speed suite: ganlab's trainer against plain PyTorch baselines, on one device, in one run.

    python bench/run.py [--device auto] [--windows 5] [--steps 20] [--quick | --no-quick] [--suites book ...]

1. Batched images/s at batch 128: the pytorch/examples DCGAN loop (bench/baselines/dataloader_loop.py: Dataset +
   DataLoader workers + per-batch .to(device) + .item() logging, PyTorch's default backend settings) against
   ganlab's trainer with its defaults (strict fp32, eager) and with its speed settings (SPEED), on the same
   networks, loss, schedule (BCE, one D step on real + fake, G on the same fake batch) and device.
2. Book mode: ganlab at batch 1 on the book's schedule (split D steps, fresh seeds) against the book's per-sample
   loop (bench/baselines/book_loop.py), for `mnist_mlp`, `mnist_cgan` and `celeba_cnn`, their windows in turn.
3. Achieved FLOP/s of the convolutional variants at batch 128 (FLOPs of one iteration counted by
   torch.utils.flop_counter on an eager iteration) as a share of the device's peak for the precision used.
4. Peak device memory of every run (CUDA: max_memory_allocated, reset before each run; on CPU not reported).
Every figure is the median of `--windows` timed windows after a warm-up, with min and max; ratios are taken
within the run. On CPU only the quick suite runs unless --no-quick. A configuration that fails is reported with
its error instead of stopping the suite.
Writes bench/results/<device>.json and prints a markdown table. Data are synthetic uint8 images of each
variant's shape: speed does not depend on pixel values, and the GPU machine has no data sets.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
# Runnable as a plain script where ganlab is not installed (the GPU machine): the source tree, the bench folder,
# and `make bench-deps`'s copies of the pure-Python dependencies when they are there.
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "src")] + [str(ROOT / "bench/.deps")] * (ROOT / "bench/.deps").is_dir()

from baselines import book_loop, dataloader_loop  # noqa: E402
from harness import measure, measure_interleaved, trainer  # noqa: E402

try:
    from ganlab.config import Variant, load_params
    from ganlab.data.load import resize
    from ganlab.engine.gan import build_gan
    from ganlab.engine.settings import cpu_threads, resolve_device, set_backends
except ModuleNotFoundError as err:
    sys.exit(f"bench: {err}. On a machine that has torch but not ganlab's dependencies, run `make bench-deps` "
             f"where ganlab is installed and bring bench/.deps along (bench/README.md)")

BATCHED = ["mnist_mlp", "mnist_vanilla", "mnist_dcgan64", "celeba_dcgan", "celeba_cnn"]
CONV = ["mnist_dcgan64", "celeba_dcgan", "celeba_cnn"]
BOOK = ["mnist_mlp", "mnist_cgan", "celeba_cnn"]
SOURCE_SHAPES = {"mnist": (1, 28, 28), "celeba": (3, 128, 128), "celeba_full": (3, 218, 178)}
# ganlab's speed settings by device and precision (train.* keys; each is documented in params.yaml).
SPEED = {("cuda", "fp32"): {"tf32": True, "cudnn_benchmark": True, "fused": True, "cuda_graph": True},
         ("cuda", "bf16"): {"precision": "bf16", "tf32": True, "cudnn_benchmark": True, "fused": True,
                            "cuda_graph": True},
         ("cpu", "fp32"): {"fused": True}}
# Dense peak FLOP/s by device (vendor datasheets). TF32 is what fp32 matmuls/convs use with TF32 enabled.
PEAKS = {"H100 80GB HBM3": {"fp32": 494.7e12, "bf16": 989.4e12},  # H100 SXM5
         "H100 PCIe": {"fp32": 378e12, "bf16": 756e12},
         "H200": {"fp32": 494.7e12, "bf16": 989.4e12}}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def peak_flops(device_name: str, precision: str) -> Optional[float]:
    for key, peaks in PEAKS.items():
        if key in device_name:
            return peaks[precision]
    return None


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` (forward and backward matmuls and convolutions), by torch's counter."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def variant(name: str, batch: Optional[int] = None, baseline_schedule: bool = True, **train) -> Variant:
    """The variant at `batch`, with the baseline's schedule (so that both sides do the same maths) and `train`."""
    cfg = load_params(ROOT / "params.yaml").variant(name)
    t = {"batch_size": batch or cfg.train.batch_size} | train
    m = {}
    if baseline_schedule:
        t |= {"d_update": "joint", "g_noise": "reuse", "n_critic": 1}
        m = {"loss": "bce", "latent": "randn"}
    return cfg.model_copy(update={"model": cfg.model.model_copy(update=m),
                                  "train": cfg.train.model_copy(update=t)})


def synthetic(cfg: Variant, n: int) -> torch.Tensor:
    x = torch.randint(0, 256, (n, *SOURCE_SHAPES[cfg.data.dataset]), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    return resize(x, cfg.data.image_size) if cfg.data.image_size else x


def timed(device: torch.device, args: argparse.Namespace, make: Callable[[], Callable[[], int]]) -> dict:
    """images/s of the work `make()` returns, and the peak device memory from its set-up on; or the error."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        rate = measure(make(), windows=args.windows, device=device)
    except Exception as exc:  # a configuration that fails is a result too; the suite goes on
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"images_per_s": rate, "peak_memory_bytes": mem}


def pytorch_defaults() -> None:
    """The backend settings a plain script runs with: TF32 in cuDNN convolutions only, no autotuner."""
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
    torch.backends.cudnn.benchmark = False


def ganlab_runs(device: torch.device, quick: bool) -> dict[str, dict]:
    runs = {"ganlab": {}}  # the defaults: strict fp32, eager
    for precision in ("fp32",) if quick else ("fp32", "bf16"):
        if (device.type, precision) in SPEED:
            runs[f"ganlab {precision} fast"] = SPEED[device.type, precision]
    return runs


def batched(device: torch.device, args: argparse.Namespace) -> list[dict]:
    rows = []
    for name in (BATCHED[:2] if args.quick else BATCHED):
        cfg = variant(name, 128)
        x = synthetic(cfg, 128 * 8)

        def baseline() -> Callable[[], int]:
            pytorch_defaults()
            gan = build_gan(cfg, x.shape[1:], device)  # same networks, same optimisers
            loader = dataloader_loop.make_loader(x.numpy(), 128, cfg.data.scale == "symmetric", args.workers,
                                                 device.type == "cuda")
            return lambda: dataloader_loop.train_steps(gan.G, gan.D, gan.opt_g, gan.opt_d, loader, cfg.model.nz,
                                                       device, args.steps)
        base = timed(device, args, baseline)
        rows.append({"suite": "batched", "variant": name, "batch": 128, "run": "baseline (DataLoader loop)",
                     "settings": {}, **base})
        for run, settings in ganlab_runs(device, args.quick).items():
            c = variant(name, 128, channels_last=cfg.model.arch != "mlp" and device.type == "cuda", **settings) \
                if settings else cfg
            r = timed(device, args, lambda: (lambda work: lambda: work(args.steps))(trainer(c, x, device)))
            rows.append({"suite": "batched", "variant": name, "batch": 128, "run": run, "settings": settings,
                         **r, "vs_baseline": ratio(r, base)})
    return rows


def book_mode(device: torch.device, args: argparse.Namespace) -> list[dict]:
    """Batch 1 on the book's schedule, every run's windows taken in turn (harness.measure_interleaved). The book
    loop runs with torch's default thread count (as a user runs it) and with one thread; the ratio is against the
    faster of the two. ganlab runs with the variant's defaults (the hand-written MLP step, one thread, fused Adam),
    with `fused: false` (the book's Adam update bit for bit), and as it ran before the hand-written step (autograd,
    the multi-tensor Adam, torch's default threads)."""
    rows = []
    for name in (BOOK[:2] if args.quick else BOOK):
        cfg = variant(name, baseline_schedule=False)  # the book's own schedule: split D steps, fresh seeds
        n = args.steps * 20
        x = synthetic(cfg, n)
        books = {"book loop": None} | ({"book loop, 1 thread": 1}
                                      if device.type == "cpu" and torch.get_num_threads() > 1 else {})
        runs = {"ganlab before (autograd, foreach Adam)": {"engine": "autograd", "fused": False,
                                                          "threads": torch.get_num_threads()},
                "ganlab": {}, "ganlab, fused: false (bitwise)": {"fused": False}} | (
            {"ganlab cuda graph": {"cuda_graph": True, "fused": True}} if device.type == "cuda" else {})
        try:
            works = {run: threaded(threads, book_baseline(name, x, device)) for run, threads in books.items()}
            for run, settings in runs.items():
                works[run] = (lambda work: lambda: work(n))(trainer(variant(name, baseline_schedule=False,
                                                                            **settings), x, device))
            rates = measure_interleaved(works, windows=args.windows, device=device, clock=CLOCKS[args.clock])
        except Exception as exc:  # a configuration that fails is a result too; the suite goes on
            traceback.print_exc()
            rows.append({"suite": "book", "variant": name, "batch": 1, "run": "all",
                         "error": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        base = max((rates[run] for run in books), key=lambda r: r["median"])
        for run in books:
            rows.append({"suite": "book", "variant": name, "batch": 1, "run": run, "settings": {},
                         "images_per_s": rates[run], "peak_memory_bytes": None})
        for run, settings in runs.items():
            r = {"images_per_s": rates[run], "peak_memory_bytes": None}
            rows.append({"suite": "book", "variant": name, "batch": 1, "run": run, "settings": settings, **r,
                         "vs_baseline": ratio(r, {"images_per_s": base})})
    return rows


def threaded(threads: Optional[int], work: Callable[[], int]) -> Callable[[], int]:
    """`work` run with torch's intra-op thread count set to `threads` (None: as it is)."""
    def run() -> int:
        with cpu_threads(threads):
            return work()
    return run


def book_baseline(name: str, x: torch.Tensor, device: torch.device) -> Callable[[], int]:
    """The book's loop over its own classes (notebooks 08 and 16), or over ganlab's copy of the notebook-14
    networks."""
    pytorch_defaults()
    if name in ("mnist_mlp", "mnist_cgan"):
        cgan = name == "mnist_cgan"
        D = (book_loop.ConditionalDiscriminator() if cgan else book_loop.Discriminator()).to(device)
        G = (book_loop.ConditionalGenerator() if cgan else book_loop.Generator()).to(device)
        dataset = book_loop.TensorRows(x.reshape(-1, 784).numpy(), device)
        seed = lambda n: torch.randn(n, device=device)  # noqa: E731
        loop = book_loop.train_cgan if cgan else book_loop.train_gan
        return lambda: loop(D, G, dataset, limit=len(x), seed_fn=seed)
    cfg = variant(name, baseline_schedule=False)
    gan = build_gan(cfg, x.shape[1:], device)  # the networks only: the book's classes bring their optimisers
    D, G = book_loop.Discriminator(model=gan.D), book_loop.Generator(model=gan.G)
    dataset = book_loop.TensorRows(x.numpy(), device)
    seed = lambda n: torch.randn(1, n, device=device)  # noqa: E731
    return lambda: book_loop.train_gan(D, G, dataset, limit=len(x), seed_fn=seed)


def flops(device: torch.device, args: argparse.Namespace, device_name: str) -> list[dict]:
    rows = []
    for name in ([] if args.quick else CONV):
        for precision in ("fp32", "bf16") if device.type == "cuda" else ("fp32",):
            settings = SPEED.get((device.type, precision), {})
            cfg = variant(name, 128, channels_last=device.type == "cuda", **settings)
            x = synthetic(cfg, 128 * 4)
            eager = cfg.model_copy(update={"train": cfg.train.model_copy(update={"cuda_graph": False})})
            per_iteration = count_flops(lambda: trainer(eager, x, device)(1))
            r = timed(device, args, lambda: (lambda work: lambda: work(args.steps))(trainer(cfg, x, device)))
            if "error" not in r:
                peak = peak_flops(device_name, precision)
                r["achieved_flops"] = per_iteration * r["images_per_s"]["median"] / 128
                r["share_of_peak"] = r["achieved_flops"] / peak if peak else None
            rows.append({"suite": "flops", "variant": name, "batch": 128, "run": f"ganlab {precision} fast",
                         "settings": settings, "flops_per_iteration": per_iteration, **r})
    return rows


def ratio(r: dict, base: dict) -> Optional[float]:
    if "error" in r or "error" in base:
        return None
    return r["images_per_s"]["median"] / base["images_per_s"]["median"]


def table(rows: list[dict]) -> str:
    out = ["| suite | variant | batch | run | images/s (min–max) | × baseline | TFLOP/s (share of peak) | "
           "peak memory |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['suite']} | {r['variant']} | {r['batch']} | {r['run']} |"
        if "error" in r:
            out.append(f"{head} failed: {r['error'][:120]} | | | |")
            continue
        g = r["images_per_s"]
        x = f"{r['vs_baseline']:.2f}" if r.get("vs_baseline") else ""
        tf = (f"{r['achieved_flops'] / 1e12:.2f}" + (f" ({100 * r['share_of_peak']:.0f} %)"
              if r.get("share_of_peak") else "")) if "achieved_flops" in r else ""
        mem = f"{r['peak_memory_bytes'] / 1e9:.2f} GB" if r.get("peak_memory_bytes") else ""
        out.append(f"{head} {g['median']:.0f} ({g['min']:.0f}–{g['max']:.0f}) | {x} | {tf} | {mem} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="iterations per timed window (x20 in book mode)")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="the baseline's DataLoader")
    ap.add_argument("--quick", action=argparse.BooleanOptionalAction, default=None,
                    help="fp32, the MNIST MLP variants only; the default on CPU, where the whole suite takes hours")
    ap.add_argument("--out", type=Path, help="where to write the JSON (default bench/results/<device>.json)")
    ap.add_argument("--suites", nargs="+", choices=["batched", "book", "flops"], default=["batched", "book", "flops"])
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall",
                    help="book mode's clock: wall time, or the process's CPU time (on a machine whose cores are "
                         "shared, CPU time counts only this process's work; extra threads' spinning counts too)")
    ap.add_argument("--threads", type=int, help="torch's CPU thread count for the whole suite (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if args.quick is None:
        args.quick = device.type == "cpu"
        print("CPU: the quick suite (fp32, MLP variants); --no-quick runs everything" * args.quick, flush=True)
    suites = {"batched": lambda: batched(device, args), "book": lambda: book_mode(device, args),
              "flops": lambda: flops(device, args, name)}
    rows = [row for suite in args.suites for row in suites[suite]()]
    set_backends(variant("mnist_mlp").train)  # leave the process as ganlab's defaults found it
    print(f"device: {name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads\n\n{table(rows)}")
    path = args.out or ROOT / "bench/results" / f"{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-').lower()}.json"
    path.write_text(json.dumps({"device": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
                                "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                               indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
