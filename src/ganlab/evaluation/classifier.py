"""The book's chapter-1 MNIST classifiers (variants.md A1), and the evaluator of the MNIST GANs.

Three networks, each split into `features` (everything up to the last layer) and `head` (the last Linear), so the
evaluator's penultimate-layer features are `features(x)`. They return raw scores; the loss applies the book's
link (its networks end in Sigmoid): `mse` is MSE on sigmoid (notebook 03), `bce` is BCE on sigmoid (04, 13).
Inputs are MNIST pixels in [0, 1] (÷255, as every book notebook), shape (B, 1, 28, 28).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ganlab.config import ClassifierCfg, ClassifierRun, VariantData
from ganlab.data.load import load_dataset
from ganlab.engine.models import mlp
from ganlab.engine.settings import resolve_device
from ganlab.io import atomic_torch_save, bad_file, load_tensors

N_CLASSES = 10
EVALUATOR = "cnn"  # the ClassifierCfg entry that evaluates the GANs
NETS = ("mlp_sigmoid", "mlp_lrelu_ln", "cnn")


class Classifier(nn.Module):
    def __init__(self, net: str):
        super().__init__()
        self.kind = net
        if net == "cnn":  # notebook 13: (B, 1, 28, 28) -> (B, 10, 12, 12) -> (B, 10, 5, 5) -> 250
            self.features = nn.Sequential(
                nn.Conv2d(1, 10, 5, 2), nn.LeakyReLU(0.02), nn.BatchNorm2d(10),
                nn.Conv2d(10, 10, 3, 2), nn.LeakyReLU(0.02), nn.BatchNorm2d(10), nn.Flatten())
            self.head = nn.Linear(250, N_CLASSES)
            return
        # notebook 03: Linear, Sigmoid, Linear; notebook 04: Linear, LeakyReLU(0.02), LayerNorm, Linear
        act, norm = ("sigmoid", "none") if net == "mlp_sigmoid" else ("lrelu", "layernorm")
        *body, self.head = mlp([784, 200, N_CLASSES], act, 0.02, norm)
        self.features = nn.Sequential(nn.Flatten(), *body)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def classifier_loss(name: str, scores: Tensor, y: Tensor) -> Tensor:
    if name == "ce":
        return F.cross_entropy(scores, y)
    target = F.one_hot(y, N_CLASSES).to(scores.dtype)
    if name == "mse":
        return F.mse_loss(torch.sigmoid(scores), target)
    return F.binary_cross_entropy_with_logits(scores, target)


@contextmanager
def _threads_for(batch_size: int) -> Iterator[None]:
    """Batch 1 is a few microseconds of arithmetic per op: extra threads only add synchronisation (3x slower on a
    busy 2-core machine), so the book's per-sample loop runs on one thread."""
    saved = torch.get_num_threads()
    if batch_size == 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def fit_classifier(run: ClassifierRun, x: Tensor, y: Tensor, generator: torch.Generator, desc: str) -> Classifier:
    """Train one classifier on x (N, 1, 28, 28) in [0, 1] and labels y (N,), in a shuffled order per epoch."""
    net = Classifier(run.net).to(x.device)
    opt = (torch.optim.SGD(net.parameters(), lr=run.lr) if run.optimizer == "sgd"
           else torch.optim.Adam(net.parameters(), lr=run.lr, betas=run.betas))
    b = run.batch_size
    with _threads_for(b):
        for epoch in range(run.epochs):
            perm = torch.randperm(len(x), generator=generator).to(x.device)
            for i in tqdm(range(0, len(x), b), desc=f"{desc} epoch {epoch + 1}/{run.epochs}", file=sys.stderr,
                          mininterval=2.0, dynamic_ncols=True):
                idx = perm[i:i + b]
                loss = classifier_loss(run.loss, net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return net.eval()


@torch.no_grad()
def predict(net: Classifier, x: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor, Tensor]:
    """Penultimate features (N, F), predicted classes (N,) and the confidence (N,) of images in [0, 1], in eval
    mode, batched. The confidence is the predicted class's softmax probability: low when no digit fits, or two
    fit alike."""
    net.eval()
    feats, preds, confs = [], [], []
    for chunk in x.split(batch_size):
        f = net.features(chunk)
        feats.append(f)
        conf, pred = net.head(f).softmax(dim=1).max(dim=1)
        preds.append(pred)
        confs.append(conf)
    return torch.cat(feats), torch.cat(preds), torch.cat(confs)


def accuracy(net: Classifier, x: Tensor, y: Tensor) -> float:
    return float((predict(net, x)[1] == y).float().mean())


def mnist_split(split: str, data_dir: Path, device: torch.device, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """MNIST images as float (N, 1, 28, 28) in [0, 1] and labels, through the engine's loader."""
    data = load_dataset(VariantData(dataset="mnist", split=split, limit=limit), data_dir, device)
    return data.scale(data.x), data.y


def train_classifiers(cfg: ClassifierCfg, data_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Train the three classifiers, save each as models/classifier/<name>.pt, and return their metrics."""
    device = resolve_device(cfg.device)
    x, y = mnist_split("train", data_dir, device, cfg.limit)
    x_test, y_test = mnist_split("test", data_dir, device)
    metrics: dict[str, Any] = {"evaluator": EVALUATOR, "n_train": len(x), "n_test": len(x_test)}
    for name in ("mlp", "mlp_refined", "cnn"):
        run: ClassifierRun = getattr(cfg, name)
        g = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)  # the initial weights
        t0 = time.perf_counter()
        net = fit_classifier(run, x, y, g, name)
        wall = time.perf_counter() - t0
        save_classifier(net, out_dir / f"{name}.pt")
        metrics[name] = {"test_accuracy": round(accuracy(net, x_test, y_test), 4), "train_accuracy":
                         round(accuracy(net, x, y), 4), "wall_time_s": round(wall, 1), "epochs": run.epochs,
                         "batch_size": run.batch_size, "loss": run.loss, "optimizer": run.optimizer, "lr": run.lr}
    return metrics


def save_classifier(net: Classifier, path: Path) -> None:
    atomic_torch_save({"net": net.kind, "state": net.state_dict()}, path)


def load_classifier(path: Path, device: torch.device) -> Classifier:
    """The evaluator saved by stage train_classifier: tensors and plain values only (a file holding pickled code
    is refused), checked against the networks this code builds."""
    rebuild = "dvc repro train_classifier"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run stage train_classifier first (`{rebuild}`)")
    saved = load_tensors(path, rebuild)
    if not isinstance(saved, dict) or saved.get("net") not in NETS or not isinstance(saved.get("state"), dict):
        raise bad_file(path, "not a saved classifier (a dict of `net`, one of " + ", ".join(NETS) + ", and `state`)",
                       rebuild)
    net = Classifier(saved["net"])
    try:
        net.load_state_dict(saved["state"])
    except RuntimeError as err:
        raise bad_file(path, f"its weights do not fit the {saved['net']} network ({str(err).splitlines()[0]})",
                       rebuild) from None
    return net.to(device).eval()


@dataclass
class Evaluator:
    """The MNIST evaluator: penultimate features, predicted digits and their confidence, of uint8 (N, 1, 28, 28)
    images."""

    net: Classifier
    batch_size: int = 1000

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return predict(self.net, images.float() / 255.0, self.batch_size)
