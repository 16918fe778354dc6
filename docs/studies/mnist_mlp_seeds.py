"""Study: when does `mnist_mlp` (the book's improved GAN) cover the ten digits? Seeds, and distinct digits.

    python docs/studies/mnist_mlp_seeds.py --data-dir data/processed [--evaluator models/classifier/cnn.pt]
                                           [--runs full:0 full:1 full:2 4000:0 4000x60k:0] [--out ...]

Each run trains `mnist_mlp` as params.yaml has it (the book's schedule: batch 1, 240,000 steps = 4 passes over
60,000 digits) through `ganlab.engine.train.fit`, then scores 10,000 samples with the evaluator CNN against the 10,000
test digits through `ganlab.evaluation.evaluate.mnist_metrics`: class coverage at 2 % (eval.coverage_min_share) and at 5 %,
the largest class's share, the unrecognisable share, FID. Run names: `full:<seed>` (all 60,000 training digits),
`4000:<seed>` (the first 4,000 digits, repeated to the same 240,000 steps: 60 passes), `4000x60k:<seed>` (4,000
digits, 60,000 steps: 15 passes). One training at a time; results are appended to the JSON as each run ends, so
an interrupted study keeps what it has. Needs the full MNIST in <data-dir>/mnist.h5 (`dvc repro download_mnist`).
Without --evaluator, the evaluator CNN is trained first (params.yaml's classifier.cnn, `--evaluator-epochs`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from ganlab.config import load_params  # noqa: E402
from ganlab.data.load import load_dataset  # noqa: E402
from ganlab.engine.contract import RunPaths  # noqa: E402
from ganlab.engine.train import fit  # noqa: E402
from ganlab.evaluation.classifier import Evaluator, accuracy, fit_classifier, load_classifier, mnist_split, save_classifier  # noqa
from ganlab.evaluation.evaluate import mnist_metrics, mnist_samples  # noqa: E402
from ganlab.evaluation.metrics import class_coverage  # noqa: E402
from ganlab.evaluation.sampling import load_trained  # noqa: E402

CPU = torch.device("cpu")


def evaluator_net(args, params) -> tuple[Evaluator, float]:
    if args.evaluator:
        net = load_classifier(args.evaluator, CPU)
    else:
        run = params.classifier.cnn.model_copy(update={"epochs": args.evaluator_epochs})
        x, y = mnist_split("train", args.data_dir, CPU)
        torch.manual_seed(params.classifier.seed)
        net = fit_classifier(run, x, y, torch.Generator().manual_seed(params.classifier.seed), "evaluator")
        save_classifier(net, args.work / "cnn.pt")
    x_test, y_test = mnist_split("test", args.data_dir, CPU)
    return Evaluator(net, params.eval.batch_size), accuracy(net, x_test, y_test)


def variant_for(params, run: str):
    digits, seed = run.split(":")
    cfg = params.variant("mnist_mlp")
    data, train = {}, {"seed": int(seed), "device": "cpu"}
    if digits.startswith("4000"):
        data["limit"] = 4000
        train["epochs"] = 60 if digits == "4000" else 15  # 240,000 or 60,000 steps
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=data),
                                  "train": cfg.train.model_copy(update=train)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data/processed")
    ap.add_argument("--evaluator", type=Path, help="a trained evaluator (models/classifier/cnn.pt)")
    ap.add_argument("--evaluator-epochs", type=int, default=20)
    ap.add_argument("--runs", nargs="+", default=["full:0", "full:1", "full:2", "4000:0", "4000x60k:0"])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ganlab-mnist_mlp-study")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/studies/mnist_mlp_seeds.json")
    ap.add_argument("--max-steps", type=int, help="cut every run short (to try the script out)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    params = load_params(ROOT / "params.yaml")
    ecfg = params.eval
    evaluator, acc = evaluator_net(args, params)
    print(f"evaluator test accuracy {acc:.4f}", flush=True)
    real = load_dataset(params.variant("mnist_mlp").data.model_copy(update={"split": "test"}), args.data_dir, CPU).x
    result = {"variant": "mnist_mlp", "evaluator_test_accuracy": round(acc, 4),
              "evaluator": str(args.evaluator) if args.evaluator else
              f"classifier.cnn of params.yaml, {args.evaluator_epochs} epochs on the 60,000 training digits",
              "n_samples": ecfg.n_samples, "real_keep": ecfg.real_keep, "runs": {}}
    if args.out.exists():
        result["runs"] = json.loads(args.out.read_text()).get("runs", {})
    for run in args.runs:
        cfg = variant_for(params, run)
        if args.max_steps:
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": args.max_steps})})
        root = args.work / run.replace(":", "_seed")
        t0 = time.perf_counter()
        train = fit(cfg, "mnist_mlp", RunPaths.for_variant("mnist_mlp", root, args.data_dir))
        data = load_dataset(cfg.data, args.data_dir, CPU)
        gan = load_trained(cfg, root / "models" / "mnist_mlp", data.shape, CPU)
        fake, _ = mnist_samples(gan, data, ecfg)
        m = mnist_metrics(fake, None, real, data.x, evaluator, ecfg)
        shares = m["class_shares"]
        result["runs"][run] = {
            "seed": cfg.train.seed, "distinct_digits": len(data), "steps": train["steps"],
            "passes": round(train["steps"] / len(data), 2), "train_images_per_s": train["images_per_s"],
            "class_coverage_2pct": m["class_coverage"],
            "class_coverage_5pct": class_coverage(np.array(shares), 0.05),
            "largest_class": int(np.argmax(shares)), "largest_class_share": m["largest_class_share"],
            "smallest_class_share": min(shares), "class_shares": shares,
            "class_shares_all_samples": m["class_shares_all_samples"],
            "unrecognisable_share": m["unrecognisable_share"], "class_kl": m["class_kl"],
            "fid_mnist": m["fid_mnist"], "precision": m["precision"], "recall": m["recall"],
            "final_d_loss": train["d_loss"], "final_g_loss": train["g_loss"],
            "wall_s": round(time.perf_counter() - t0, 1)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        r = result["runs"][run]
        print(f"{run}: coverage {r['class_coverage_2pct']} (2 %), {r['class_coverage_5pct']} (5 %), largest "
              f"{r['largest_class']} at {r['largest_class_share']:.1%}, unrecognisable {r['unrecognisable_share']:.1%}"
              f", FID {r['fid_mnist']:.1f}, {r['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
