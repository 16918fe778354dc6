"""CPU images/s of a `mnist_mlp` epoch: ganlab at batch 1 and 64 against the book's per-sample loop.

    python bench/train_cpu.py [--samples 2000] [--windows 5]

Needs data/processed/mnist.h5 (`dvc repro download_mnist`). Writes bench/results/train_cpu-<host>.json and prints
a markdown table. Ratios are taken within the run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import h5py
import pandas
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from baselines import book_loop  # noqa: E402
from harness import measure, trainer  # noqa: E402

from ganlab.config import load_params  # noqa: E402
from ganlab.data.load import load_dataset  # noqa: E402


def ganlab_work(batch_size: int, samples: int, data_dir: Path):
    cfg = load_params(ROOT / "params.yaml").variant("mnist_mlp")
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": batch_size, "device": "cpu"})})
    work = trainer(cfg, load_dataset(cfg.data, data_dir, torch.device("cpu")).x, torch.device("cpu"))
    return lambda: work(samples // batch_size)


def book_work(samples: int, data_dir: Path):
    with h5py.File(data_dir / "mnist.h5") as f:
        x, y = f["train/images"][:samples].reshape(-1, 784), f["train/labels"][:samples]
    frame = pandas.DataFrame(x.astype("int64"))
    frame.insert(0, "label", y)
    dataset = book_loop.MnistDataset(frame)
    D, G = book_loop.Discriminator(), book_loop.Generator()
    return lambda: book_loop.train_gan(D, G, dataset, limit=samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data/processed")
    args = ap.parse_args()
    torch.manual_seed(0)
    runs = {
        "book loop (batch 1, pandas Dataset)": book_work(args.samples, args.data_dir),
        "ganlab batch 1": ganlab_work(1, args.samples, args.data_dir),
        "ganlab batch 64": ganlab_work(64, args.samples * 8, args.data_dir),
    }
    results = {name: measure(work, windows=args.windows) for name, work in runs.items()}
    base = results["book loop (batch 1, pandas Dataset)"]["median"]
    print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| run | images/s (median) | min | max | × book loop |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['median']:.0f} | {r['min']:.0f} | {r['max']:.0f} | {r['median'] / base:.2f} |")
    out = ROOT / "bench/results" / f"train_cpu-{platform.node() or 'cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
                               "samples": args.samples, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
