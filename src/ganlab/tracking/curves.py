"""Matplotlib figures of a run (headless: the Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ganlab.engine.contract import LOG_COLUMNS  # noqa: E402
from ganlab.io import atomic_path, read_table  # noqa: E402


def loss_curves(losses_csv: Path, out_png: Path, title: str = "") -> Path:
    """Two panels from plots/<v>/losses.csv: D and G loss, and D(x) against D(G(z))."""
    rows = read_table(losses_csv, LOG_COLUMNS)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
    for col, label in (("d_loss", "D loss"), ("g_loss", "G loss")):
        a.plot(rows["step"], rows[col], label=label, lw=0.8)
    a.set(xlabel="step", ylabel="loss", title=f"{title} losses")
    a.legend()
    for col, label in (("d_x", "D(x)"), ("d_gz", "D(G(z))")):
        b.plot(rows["step"], rows[col], label=label, lw=0.8)
    b.set(xlabel="step", title=f"{title} discriminator outputs")
    b.legend()
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return out_png
