"""Stage train_classifier: the book's three MNIST classifiers (chapter 1); the CNN is the MNIST GANs' evaluator."""

import argparse
import json
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.evaluation.classifier import train_classifiers
from ganlab.io import BadFile, atomic_write


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data-dir", type=Path, default=Path("data/processed"))
    ap.add_argument("--out-dir", type=Path, default=Path("models/classifier"))
    ap.add_argument("--metrics", type=Path, default=Path("metrics/classifier.json"))
    args = ap.parse_args()
    try:
        metrics = train_classifiers(load_params(args.params).classifier, args.data_dir, args.out_dir)
    except (ConfigError, FileNotFoundError, BadFile) as err:
        print(f"train_classifier: error: {err}", file=sys.stderr)
        return 1
    atomic_write(args.metrics, json.dumps(metrics, indent=2) + "\n")
    print("train_classifier: test accuracy " + ", ".join(f"{k} {metrics[k]['test_accuracy']:.4f}"
                                                         for k in ("mlp", "mlp_refined", "cnn")), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
