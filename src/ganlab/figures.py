"""Matplotlib figures of the sample stage and the report (headless: the Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import numpy as np

from ganlab.io import atomic_path, read_table

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig: "plt.Figure", path: Path) -> Path:
    """Save atomically, so a killed stage never leaves half a PNG."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


def montage(images: Sequence[np.ndarray], titles: Sequence[str], path: Path, cols: int = 5) -> Path:
    """Pictures (H, W[, C] uint8) side by side with a title each: one grid per epoch."""
    rows = math.ceil(len(images) / cols)
    cols = min(cols, len(images))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False, constrained_layout=True)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def heatmap(values: np.ndarray, row_labels: Sequence[str], path: Path, title: str) -> Path:
    """The book's 1010 figure: one row per snapshot, one column per output, values written in the cells."""
    fig, ax = plt.subplots(figsize=(4.5, 0.45 * len(values) + 1.2), constrained_layout=True)
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (r, c), v in np.ndenumerate(values):
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v > 0.6 else "black")
    ax.set(yticks=range(len(values)), yticklabels=row_labels, xticks=range(values.shape[1]), title=title)
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def scatter_panels(real: np.ndarray, panels: Sequence[np.ndarray], titles: Sequence[str], path: Path,
                   cols: int = 5) -> Path:
    """2-D samples (N, 2) against the real ones, one panel each: d2l's Gaussian GAN."""
    rows = math.ceil(len(panels) / cols)
    cols = min(cols, len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.8 * rows), squeeze=False, sharex=True,
                             sharey=True, constrained_layout=True)
    for ax in axes.flat:
        ax.axis("off")
    for ax, pts, title in zip(axes.flat, panels, titles):
        ax.axis("on")
        ax.scatter(real[:, 0], real[:, 1], s=3, c="tab:blue", alpha=0.4, label="real")
        ax.scatter(pts[:, 0], pts[:, 1], s=3, c="tab:orange", alpha=0.6, label="generated")
        ax.set_title(title, fontsize=9)
    axes.flat[0].legend(fontsize=7, markerscale=3)
    return _save(fig, path)


def xy_game_figure(path_xy: np.ndarray, closed_form: np.ndarray, out: Path, lr: float) -> Path:
    """Appendix D: the spiral of simultaneous gradient play on x·y, and its radius against (1 + lr²)^(n/2)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    a.plot(path_xy[:, 0], path_xy[:, 1], lw=0.8)
    a.plot(*path_xy[0], "go", label="start (0.6, 0.7)")
    a.plot(0, 0, "r+", ms=12, label="equilibrium (0, 0)")
    a.set(xlabel="x", ylabel="y", title="x += lr·y, y −= lr·x", aspect="equal")
    a.legend(fontsize=8)
    steps = np.arange(len(path_xy))
    b.plot(steps, np.hypot(path_xy[:, 0], path_xy[:, 1]), label="radius")
    b.plot(steps, closed_form, "--", label=f"r0·(1+{lr}²)^(n/2)")
    b.set(xlabel="step", ylabel="radius", title="the radius grows every step")
    b.legend(fontsize=8)
    return _save(fig, out)



def bar_chart(panels: dict[str, list[tuple[str, float, Optional[float]]]], path: Path) -> Path:
    """One horizontal bar panel per distance: (variant, value, real-data reference or None) each. The reference,
    real images scored the same way, is a black tick across its bar: the best a generator could do."""
    cols = min(len(panels), 2)
    rows = math.ceil(len(panels) / cols)
    height = max(len(b) for b in panels.values()) * 0.35 + 1.2
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, height * rows), squeeze=False, constrained_layout=True)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, bars) in zip(axes.flat, panels.items()):
        names = [b[0] for b in bars]
        ax.barh(range(len(bars)), [b[1] for b in bars], color="tab:blue", height=0.6)
        refs = [(i, b[2]) for i, b in enumerate(bars) if b[2] is not None]
        for k, (i, ref) in enumerate(refs):
            ax.plot([ref, ref], [i - 0.42, i + 0.42], color="black", lw=2.5, label="real data" if k == 0 else None)
        for i, b in enumerate(bars):
            ax.annotate(f"{b[1]:.3g}", (b[1], i), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=8)
        ax.set(yticks=range(len(bars)), yticklabels=names, title=title)
        ax.invert_yaxis()
        ax.set_xlim(0, max(max(b[1] for b in bars), max((r for _, r in refs), default=0)) * 1.18 or 1)
        if refs:
            ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def loss_overlay(curves: dict[str, tuple[Path, int]], path: Path, title: str, ideal: Optional[float]) -> Path:
    """The losses of several variants of one loss function, overlaid: D's mean term and G's loss against epochs
    (step / steps per epoch), with the loss's ideal value where it has one (each D term and G's loss when D
    outputs 0.5: the dashed line is drawn at that number and labelled with it)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.4), constrained_layout=True)
    for name, (csv, per_epoch) in curves.items():
        rows = read_table(csv, ("step", "d_real", "d_fake", "g_loss")).dropna(subset=["g_loss"])
        x = rows["step"] / per_epoch
        a.plot(x, (rows["d_real"] + rows["d_fake"]) / 2, lw=0.9, label=name)
        b.plot(x, rows["g_loss"], lw=0.9, label=name)
    for ax, what in ((a, "D loss, mean of its real and fake terms"), (b, "G loss")):
        if ideal is not None:
            ax.axhline(ideal, color="black", ls="--", lw=0.8, label=f"ideal at D = 0.5: {ideal:.4g}")
        ax.set(xlabel="epochs", title=f"{title}: {what}")
        ax.legend(fontsize=7)
    return _save(fig, path)


def seed_bands(arms: dict[str, list[Path]], path: Path, title: str) -> Path:
    """Loss curves of several arms overlaid: per arm and loss (D, G) the mean over its seeds' losses.csv, with the
    band from the lowest to the highest seed at each logged step (steps all seeds logged)."""
    fig, ax = plt.subplots(figsize=(6.2, 3.4), constrained_layout=True)
    for (label, files), color in zip(arms.items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        tables = [read_table(f, ("step", "d_loss", "g_loss")).set_index("step") for f in files]
        steps = sorted(set.intersection(*(set(t.index) for t in tables)))
        for key, style in (("d_loss", "-"), ("g_loss", "--")):
            v = np.stack([t.loc[steps, key].to_numpy(dtype=float) for t in tables])
            ax.plot(steps, v.mean(0), style, color=color, lw=1.2, label=f"{label} {key[0].upper()} ({len(files)} seeds)")
            if len(files) > 1:
                ax.fill_between(steps, v.min(0), v.max(0), color=color, alpha=0.18, lw=0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)
