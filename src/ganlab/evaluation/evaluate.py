"""Stage evaluate@<variant>: numbers the sources never had, for one trained variant -> metrics/<variant>/eval.json.

Every variant: its final D terms and G loss beside the ideal equilibrium of its loss (book Appendix A).
- pattern_1010: the generated pattern and its mean absolute error from 1, 0, 1, 0;
- gaussian_2d: the error of the generated mean and covariance from d2l's b and AᵀA (and their Fréchet distance);
- MNIST: in the evaluator classifier's feature space (models/classifier/cnn.pt), `eval.n_samples` samples against
  the test images (digits the variant never trained on; flagged in `real_digits_held_out` otherwise): FID, KID,
  precision/recall, the share of unrecognisable samples (the classifier less sure of them than of
  `eval.real_keep` of the real digits), class coverage, largest class share and KL from uniform of the rest, the
  conditional accuracy, and nearest-neighbour memorisation in pixel space;
- CelebA: what needs no Inception network: per-channel pixel mean/std distances, `fid_pixels16` (the Fréchet
  distance of 16×16 downsampled pixel vectors), memorisation at 32×32; Inception FID/KID only when the optional
  torch-fidelity and its weights are present locally, else null with the reason.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from scipy import stats
from torch import Tensor
from tqdm import tqdm

from ganlab.config import EvalCfg, Params, Variant, VariantData
from ganlab.data.load import TOY, Dataset, load_dataset, resize
from ganlab.data.toy import GAUSS_A, GAUSS_B, PATTERN
from ganlab.engine.contract import LOG_COLUMNS, RunPaths
from ganlab.engine.gan import GAN
from ganlab.engine.losses import get_loss
from ganlab.engine.settings import resolve_device
from ganlab.evaluation.classifier import N_CLASSES, Evaluator, load_classifier
from ganlab.evaluation.metrics import (class_coverage, class_kl, class_shares, confidence_threshold, fid,
                                       frechet_distance, kid, mean_cov, nn_memorization, precision_recall)
from ganlab.evaluation.sampling import MNIST_SIZE, data_shape, load_trained, sample_batches, to_uint8
from ganlab.io import read_json, read_table

MEMO_SIZE, FID_PIXELS = 32, 16  # CelebA: pixel grids for memorisation and for `fid_pixels16`
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's converted TF Inception weights


# --------------------------------------------------------------------------------------------------- losses
def final_losses(losses_csv: Path, loss_name: str, fraction: float) -> dict[str, Any]:
    """The mean of the last `fraction` of the logged rows (one row is already a mean over `log_every` steps; at
    batch 1 that is still noisy), beside the ideal of the loss: each D term and G's loss when D outputs 0.5."""
    rows = read_table(losses_csv, LOG_COLUMNS).dropna(subset=["g_loss"])
    tail = rows.tail(max(1, math.ceil(len(rows) * fraction)))
    out: dict[str, Any] = {k: float(tail[k].mean()) for k in ("d_loss", "d_real", "d_fake", "g_loss", "d_x", "d_gz")}
    out["d_loss_per_term"] = (out["d_real"] + out["d_fake"]) / 2
    out.update(loss=loss_name, final_rows=len(tail), ideal=get_loss(loss_name).ideal)
    if out["ideal"] is not None:  # bce, mse: G's loss at D = 0.5 equals each D term's
        for k in ("d_real", "d_fake", "g_loss"):
            out[f"{k}_vs_ideal"] = out[k] - out["ideal"]
    return out


def epoch_time(train_json: Path) -> dict[str, float]:
    """Seconds per epoch and per image as trained, also for runs cut short by `train.max_steps` (train.json's
    `epochs_done` is steps over steps per epoch), so that they compare with the sources' timings."""
    t = read_json(train_json)
    return {"wall_time_per_epoch_s": t["wall_time_s"] / max(t["epochs_done"], 1e-12),
            "seconds_per_image": t["wall_time_s"] / max(t["images_seen"], 1)}


# --------------------------------------------------------------------------------------------------- vectors
def vector_metrics(gan: GAN, cfg: Variant, ecfg: EvalCfg) -> dict[str, Any]:
    x = torch.cat([s for s, _ in sample_batches(gan, ecfg.n_samples, ecfg.batch_size, ecfg.seed)]).double().cpu()
    if cfg.data.dataset == "pattern_1010":
        target = torch.tensor(PATTERN, dtype=torch.float64)
        return {"pattern": x.mean(0).tolist(), "pattern_mae": float((x - target).abs().mean())}
    mu, cov = mean_cov(x)
    true_cov = (GAUSS_A.T @ GAUSS_A).astype(np.float64)
    return {"gen_mean": mu.tolist(), "gen_cov": cov.tolist(), "mean_error": float(np.linalg.norm(mu - GAUSS_B)),
            "cov_error": float(np.linalg.norm(cov - true_cov)),  # Frobenius
            "fid_gaussian": frechet_distance(mu, cov, GAUSS_B.astype(np.float64), true_cov)}


# --------------------------------------------------------------------------------------------------- MNIST
def mnist_samples(gan: GAN, data: Dataset, ecfg: EvalCfg) -> tuple[Tensor, Optional[Tensor]]:
    """uint8 (n, 1, 28, 28) samples (64×64 variants area/bilinear-resized, as the evaluator reads 28×28), and the
    digits asked for when conditional."""
    xs, ys = [], []
    for x, y in sample_batches(gan, ecfg.n_samples, ecfg.batch_size, ecfg.seed):
        u8 = to_uint8(data, x).cpu()
        xs.append(u8 if u8.shape[-1] == MNIST_SIZE else resize(u8, MNIST_SIZE))
        ys.append(y)
    return torch.cat(xs), None if ys[0] is None else torch.cat(ys).cpu()


def mnist_metrics(fake: Tensor, asked: Optional[Tensor], real: Tensor, train: Tensor, evaluator: Evaluator,
                  ecfg: EvalCfg) -> dict[str, Any]:
    """fake, real (test) and train: uint8 (N, 1, 28, 28)."""
    g = torch.Generator().manual_seed(ecfg.seed)
    f_fake, p_fake, c_fake = evaluator(fake)
    f_real, _, c_real = evaluator(real)
    kid_mean, kid_std = kid(f_fake, f_real, ecfg.kid_subsets, ecfg.kid_subset_size, g)
    precision, recall = precision_recall(f_real, f_fake, ecfg.knn_k, ecfg.chunk)
    # Samples the classifier is less sure of than it is of all but (1 - real_keep) of the real digits are counted
    # apart, as unrecognisable; the class histogram is that of the rest (blobs forced into a class would skew it).
    threshold = confidence_threshold(c_real, ecfg.real_keep)
    sure = (c_fake >= threshold).cpu()
    shares, shares_all = class_shares(p_fake.cpu()[sure], N_CLASSES), class_shares(p_fake, N_CLASSES)
    memo, nn_threshold = nn_memorization(pixels(fake), pixels(train), ecfg.n_samples, g, ecfg.chunk)
    out = {"fid_mnist": fid(f_fake, f_real), "kid_mnist": kid_mean, "kid_mnist_std": kid_std,
           "precision": precision, "recall": recall,
           "unrecognisable_share": round(1 - float(sure.float().mean()), 4), "confidence_threshold": threshold,
           "class_coverage": class_coverage(shares, ecfg.coverage_min_share), "class_kl": class_kl(shares),
           "class_shares": [round(float(s), 4) for s in shares], "largest_class_share": round(float(shares.max()), 4),
           "class_shares_all_samples": [round(float(s), 4) for s in shares_all],
           "nn_memorization": memo, "nn_threshold": nn_threshold}
    if asked is not None:
        out["cgan_accuracy"] = float((p_fake.cpu() == asked).float().mean())
    return out


def real_reference(train: Tensor, real: Tensor, evaluator: Evaluator, ecfg: EvalCfg) -> dict[str, float]:
    """FID and KID of `eval.n_samples` real training images against the test images: what a perfect generator
    would score with this many samples (the floor the report's chart draws), `<metric>_real`."""
    g = torch.Generator().manual_seed(ecfg.seed)
    pick = train[torch.randperm(len(train), generator=g)[:ecfg.n_samples].to(train.device)]
    f_pick = evaluator(pick)[0]
    f_real = evaluator(real)[0]
    return {"fid_mnist_real": fid(f_pick, f_real),
            "kid_mnist_real": kid(f_pick, f_real, ecfg.kid_subsets, ecfg.kid_subset_size, g)[0]}


def pixels(x: Tensor) -> Tensor:
    """uint8 images -> float rows in [0, 1] (N, C·H·W), for distances in pixel space."""
    return x.flatten(1).float() / 255.0


# --------------------------------------------------------------------------------------------------- CelebA
def channel_stats(batches: list[Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (3,) in [0, 1] over uint8 (B, 3, H, W) batches, accumulated in float64."""
    n, s, s2 = 0, 0.0, 0.0
    for b in batches:
        v = b.double().div(255).transpose(0, 1).flatten(1)  # (3, B·H·W)
        n, s, s2 = n + v.shape[1], s + v.sum(1), s2 + (v * v).sum(1)
    mean = s / n
    return mean.numpy(), (s2 / n - mean * mean).clamp(min=0).sqrt().numpy()


Extractor = Callable[[Tensor], Tensor]  # uint8 images (B, 3, H, W) -> features (B, F) on the CPU


def inception_features(ecfg: EvalCfg, device: torch.device) -> tuple[Optional[Extractor], Optional[str]]:
    """torch-fidelity's Inception-v3 (2048-d pool features of uint8 RGB) when it imports and its weights are on
    disk; never downloads. Returns (extractor, None) or (None, the reason)."""
    if not ecfg.inception:
        return None, "disabled by eval.inception: false"
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import (
            FeatureExtractorInceptionV3,
        )
    except Exception as err:  # ImportError, or a broken optional install
        return None, f"the optional torch-fidelity package is not importable ({type(err).__name__}: {err})"
    path = Path(ecfg.inception_weights or Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE)
    if not path.exists():
        return None, f"Inception weights not found at {path} (set eval.inception_weights); downloads are not attempted"
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    except Exception as err:
        return None, f"torch-fidelity's Inception-v3 failed to load from {path}: {err}"
    net = net.to(device)
    return (lambda x: net(x.to(device))[0].cpu()), None


def celeba_metrics(gan: GAN, data: Dataset, ecfg: EvalCfg, device: torch.device) -> dict[str, Any]:
    """Generated faces against the variant's own (resized) real set, batch by batch: only small grids are kept."""
    inception, reason = inception_features(ecfg, device)
    real_batches = list(data.x.cpu().split(ecfg.batch_size))
    fake_batches = [to_uint8(data, x).cpu() for x, _ in sample_batches(gan, ecfg.n_samples, ecfg.batch_size,
                                                                          ecfg.seed)]
    out: dict[str, Any] = {}
    (m_f, s_f), (m_r, s_r) = channel_stats(fake_batches), channel_stats(real_batches)
    out.update(pixel_mean_dist=float(np.linalg.norm(m_f - m_r)), pixel_std_dist=float(np.linalg.norm(s_f - s_r)))
    small_f = torch.cat([resize(b, MEMO_SIZE) for b in fake_batches])
    small_r = torch.cat([resize(b, MEMO_SIZE) for b in real_batches])
    out["fid_pixels16"] = fid(pixels(resize(small_f, FID_PIXELS)), pixels(resize(small_r, FID_PIXELS)))
    g = torch.Generator().manual_seed(ecfg.seed)
    out["nn_memorization"], out["nn_threshold"] = nn_memorization(pixels(small_f), pixels(small_r), ecfg.n_samples,
                                                                  g, ecfg.chunk)
    out.update(fid_inception=None, kid_inception=None, fid_inception_reason=reason)
    if inception is not None:
        feats = [torch.cat([inception(b) for b in tqdm(bs, desc=f"Inception features: {which}", unit="batch",
                                                       file=sys.stderr, mininterval=2.0, dynamic_ncols=True)])
                 for which, bs in (("samples", fake_batches), ("real", real_batches))]
        out["fid_inception"] = fid(*feats)
        out["kid_inception"] = kid(*feats, ecfg.kid_subsets, ecfg.kid_subset_size, g)[0]
    return out


# --------------------------------------------------------------------------------------------------- headline
# The handful of numbers a user compares across variants and experiments (`dvc exp show`, `dvc metrics diff`):
# short keys under the variant's name (DVC's columns read `mnist_vanilla.fid`), so that a comparison over a few
# variants fits a terminal. Only the keys a variant has are written.
HEADLINE = {  # headline key: the eval.json (or train.json) keys it takes, the first present wins
    "fid": ("fid_mnist", "fid_inception", "fid_pixels16", "fid_gaussian"),
    "kid": ("kid_mnist", "kid_inception"),
    "err": ("pattern_mae", "mean_error"),  # the toys' distance to their target
    "cover": ("class_coverage",),  # digits drawn (of 10)
    "unrec": ("unrecognisable_share",),  # share of samples the evaluator cannot read as any digit
    "acc": ("cgan_accuracy",),  # conditional: the asked digit drawn
    "d": ("d_loss",), "g": ("g_loss",),  # final losses (mean over the last rows)
    "steps": ("steps",), "img_s": ("images_per_s",),
}


def headline(evaluation: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    both = {**training, **evaluation}
    out = {}
    for key, sources in HEADLINE.items():
        value = next((both[s] for s in sources if both.get(s) is not None), None)
        if value is not None:
            out[key] = round(value, 4) if isinstance(value, float) else value
    return out


def headline_over_seeds(heads: dict[int, dict[str, Any]], n_failed: int) -> dict[str, Any]:
    """A multi-seed run's headline: per number its mean over the seeds that trained, `<key>_lo`/`<key>_hi` (Student's t
    95 % interval of that mean; none from one seed), `n_seeds` (that trained) and `n_failed` (a failed seed has no
    numbers, so it is counted here rather than averaged as if it had not run)."""
    out: dict[str, Any] = {"n_seeds": len(heads), "n_failed": n_failed}
    for key in HEADLINE:
        v = np.array([h[key] for h in heads.values() if h.get(key) is not None], dtype=float)
        if not len(v):
            continue
        out[key] = round(float(v.mean()), 4)
        if len(v) > 1:
            lo, hi = (stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v)) if v.std() > 0
                      else (v.mean(), v.mean()))
            out[f"{key}_lo"], out[f"{key}_hi"] = round(float(lo), 4), round(float(hi), 4)
    return out


# --------------------------------------------------------------------------------------------------- the stage
def evaluate_variant(params: Params, name: str, root: Path, data_dir: Path,
                     seed: Optional[int] = None) -> dict[str, Any]:
    """All metrics of one trained variant (outputs of train@<name> under `root`; `seed`: that seed's run of a
    multi-seed variant)."""
    cfg, ecfg = params.variant(name), params.eval
    device = resolve_device(ecfg.device)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"variant": name, "dataset": cfg.data.dataset, "n_samples": ecfg.n_samples,
                           "seed": ecfg.seed}
    run = RunPaths.for_variant(name, root, data_dir, seed)
    out.update(final_losses(run.losses_csv, cfg.model.loss, ecfg.final_fraction))
    # The variant's own training set at its native size: the memorisation reference (and the real CelebA faces).
    native = cfg.data if cfg.data.dataset != "mnist" else cfg.data.model_copy(update={"image_size": None})
    data = load_dataset(native, data_dir, torch.device("cpu"))
    out.update(epoch_time(run.train_json))
    gan = load_trained(cfg, run.models, data_shape(cfg.data, data_dir), device)
    if cfg.data.dataset in TOY:
        out.update(vector_metrics(gan, cfg, ecfg))
    elif cfg.data.dataset == "mnist":
        fake, asked = mnist_samples(gan, data, ecfg)
        real = load_dataset(VariantData(dataset="mnist", split="test"), data_dir, torch.device("cpu")).x
        out["real_digits_held_out"] = cfg.data.split == "train"
        if not out["real_digits_held_out"]:
            print(f"evaluate@{name}: warning: data.split is {cfg.data.split!r}, so the test digits the samples are "
                  f"scored against were in its training set (FID, precision and recall flatter it); set "
                  f"data.split: train to score it on digits it never saw", file=sys.stderr)
        evaluator = Evaluator(load_classifier(root / "models" / "classifier" / "cnn.pt", device), ecfg.batch_size)
        out.update(mnist_metrics(fake.to(device), asked, real.to(device), data.x.to(device), evaluator, ecfg))
        out.update(real_reference(data.x.to(device), real.to(device), evaluator, ecfg))
    else:
        out.update(celeba_metrics(gan, data, ecfg, device))
    out["eval_time_s"] = round(time.perf_counter() - t0, 2)
    return out
