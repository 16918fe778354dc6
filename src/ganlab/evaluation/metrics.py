"""Sample-quality metrics on feature (or pixel) vectors: pure functions of tensors, no models, no files.

- Fréchet distance (FID's formula) between the Gaussians fitted to two sets, and KID (Bińkowski et al. 2018):
  the unbiased squared MMD with the cubic polynomial kernel, averaged over random subsets.
- Precision and recall as k-nearest-neighbour manifold estimates (Kynkäänniemi et al. 2019): a sample is "on"
  a set's manifold when it lies inside some member's ball whose radius is that member's k-th neighbour distance.
- Nearest-neighbour memorisation, and the class-histogram mode-collapse detectors.

Distance matrices are never built whole: 10,000 × 60,000 distances are taken in `chunk` × `chunk` blocks.
The long loops (KID's subsets, the distance blocks) show a progress bar on stderr, named by `desc`.
"""

from __future__ import annotations

import math
import sys
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm


# --------------------------------------------------------------------------------------------------- Fréchet, KID
def mean_cov(x: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of the rows of x (N, D), in float64."""
    a = x.detach().double().cpu().numpy()
    return a.mean(axis=0), np.atleast_2d(np.cov(a, rowvar=False))


def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 − mu2||² + Tr(C1 + C2 − 2 (C1 C2)^½). The trace of (C1 C2)^½ equals that of (S C2 S)^½ with
    S = C1^½, a symmetric PSD matrix, so it comes from eigenvalues and never from a complex sqrtm."""
    s = _sqrtm_psd(cov1)
    eig = np.linalg.eigvalsh(s @ cov2 @ s)
    tr_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)


def fid(a: Tensor, b: Tensor) -> float:
    """The Fréchet distance between the Gaussians fitted to the rows of a and of b."""
    return frechet_distance(*mean_cov(a), *mean_cov(b))


def _mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    m = x.shape[0]
    off = lambda k: (k.sum() - k.diagonal().sum()) / (m * (m - 1))  # noqa: E731 (drops the i = j terms)
    return float(off(kxx) + off(kyy) - 2 * kxy.mean())


def kid(a: Tensor, b: Tensor, subsets: int, subset_size: int, generator: torch.Generator) -> tuple[float, float]:
    """KID: mean and standard deviation over `subsets` random subsets (without replacement) of both sets."""
    m = min(subset_size, len(a), len(b))
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    vals = [_mmd2_unbiased(a[torch.randperm(len(a), generator=generator)[:m]],
                           b[torch.randperm(len(b), generator=generator)[:m]]) for _ in _bar(range(subsets), "KID subsets", unit="subset")]
    return float(np.mean(vals)), float(np.std(vals))


def _bar(iterable, desc: str, total: Optional[int] = None, unit: str = "it") -> tqdm:
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, mininterval=2.0, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------------- neighbours
def _blocks(query: Tensor, ref: Tensor, chunk: int, desc: str) -> Iterator[tuple[int, int, Tensor]]:
    """(row offset, column offset, distances (<= chunk, <= chunk)) over the whole query × ref matrix."""
    pairs = [(i, j) for i in range(0, len(query), chunk) for j in range(0, len(ref), chunk)]
    for i, j in _bar(pairs, desc, unit="block"):
        yield i, j, torch.cdist(query[i:i + chunk], ref[j:j + chunk])


def knn_distance(query: Tensor, ref: Tensor, k: int = 1, chunk: int = 2048,
                 self_index: Optional[Tensor] = None, desc: str = "nearest neighbours") -> Tensor:
    """Distance (N,) from each query row to its k-th nearest ref row. `self_index[i]`: a ref row to leave out for
    query row i (the row itself, when query rows are ref rows), so a point is never its own neighbour."""
    query, ref = query.float(), ref.float()
    best = torch.full((len(query), k), math.inf, device=query.device)
    for i, j, d in _blocks(query, ref, chunk, desc):
        if self_index is not None:
            rows = torch.arange(d.shape[0], device=d.device)
            cols = self_index[i:i + d.shape[0]].to(d.device) - j
            hit = (cols >= 0) & (cols < d.shape[1])
            d[rows[hit], cols[hit]] = math.inf
        merged = torch.cat([best[i:i + d.shape[0]], d], dim=1)
        best[i:i + d.shape[0]] = merged.topk(k, dim=1, largest=False).values  # (b, k) ascending
    return best[:, k - 1]


def knn_radii(x: Tensor, k: int, chunk: int = 2048, desc: str = "radii") -> Tensor:
    """Each row's distance to its k-th nearest other row of the same set: the radius of its ball."""
    return knn_distance(x, x, k, chunk, self_index=torch.arange(len(x)), desc=desc)


def in_manifold(query: Tensor, ref: Tensor, radii: Tensor, chunk: int = 2048, desc: str = "in manifold") -> Tensor:
    """(N,) bool: query row lies in at least one ref row's ball."""
    query, ref = query.float(), ref.float()
    inside = torch.zeros(len(query), dtype=torch.bool, device=query.device)
    for i, j, d in _blocks(query, ref, chunk, desc):
        inside[i:i + d.shape[0]] |= (d <= radii[j:j + d.shape[1]]).any(dim=1)
    return inside


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, chunk: int = 2048) -> tuple[float, float]:
    """Precision: share of fake samples on the real manifold; recall: share of real samples on the fake one."""
    precision = in_manifold(fake, real, knn_radii(real, k, chunk, "precision: real radii"), chunk,
                            "precision: fake in real").float().mean()
    recall = in_manifold(real, fake, knn_radii(fake, k, chunk, "recall: fake radii"), chunk,
                         "recall: real in fake").float().mean()
    return float(precision), float(recall)


def nn_memorization(fake: Tensor, train: Tensor, n_ref: int, generator: torch.Generator,
                    chunk: int = 2048) -> tuple[float, float]:
    """Share of samples closer to their nearest training image than the median real-to-real nearest-neighbour
    distance (a training image to its nearest *other* training image, over `n_ref` random ones), and that median.
    A sampler of fresh images from the data distribution scores about 0.5; copies of training images score 1."""
    ref = torch.randperm(len(train), generator=generator)[:min(n_ref, len(train))]
    threshold = knn_distance(train[ref], train, 1, chunk, self_index=ref,
                             desc="memorisation: real to train").median()
    nearest = knn_distance(fake, train, 1, chunk, desc="memorisation: samples to train")
    return float((nearest < threshold).float().mean()), float(threshold)


# --------------------------------------------------------------------------------------------------- classes
def class_shares(pred: Tensor, n_classes: int) -> np.ndarray:
    """The predicted class histogram (n_classes,) as shares summing to 1 (all zero when pred is empty)."""
    counts = torch.bincount(pred.flatten().cpu(), minlength=n_classes).double()
    return (counts / counts.sum().clamp(min=1)).numpy()


def confidence_threshold(real_confidence: Tensor, keep: float) -> float:
    """The classifier confidence that a share `keep` of real digits reaches (its 1 − keep quantile): below it, a
    sample is one the classifier would not call a digit if it were real ("unrecognisable")."""
    return float(torch.quantile(real_confidence.detach().double().cpu(), 1 - keep))


def class_coverage(shares: np.ndarray, min_share: float) -> int:
    """How many classes get at least `min_share` of the samples."""
    return int((shares >= min_share).sum())


def class_kl(shares: np.ndarray) -> Optional[float]:
    """KL(histogram || uniform) = ln K − H(histogram): 0 for balanced classes, ln K for one class only; None for
    an empty histogram."""
    if not shares.any():
        return None
    p = shares[shares > 0]
    return float((p * np.log(p * len(shares))).sum())
