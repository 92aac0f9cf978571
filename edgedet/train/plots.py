"""Training curves: losses and validation metrics per epoch as a PNG, the best epoch marked.

Uses matplotlib's object API with the Agg canvas, so it never touches a display or the global
pyplot backend of the calling program.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from edgedet.runtime.files import atomic_path

__all__ = ["plot_history"]


def plot_history(history: Sequence[dict[str, float]], path: str | os.PathLike, best_epoch: int | None = None,
                 title: str = "") -> Path:
    """Draw ``history`` (one dict per epoch with an ``epoch`` key) into ``path``: the ``train/*``
    losses in the left panel, the ``val/*`` metrics in the right one, the best epoch dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    first = history[0] if history else {}
    panels = [("train loss", [k for k in first if k.startswith("train/")]),
              ("validation", [k for k in first if k.startswith("val/")])]
    fig = Figure(figsize=(11, 4), dpi=90)
    FigureCanvasAgg(fig)
    epochs = [row["epoch"] for row in history]
    for i, (name, keys) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        for key in keys:
            style = {"linewidth": 2.2} if key in ("train/loss", "val/fitness") else {"linewidth": 1.2}
            ax.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", markersize=3,
                    label=key.split("/", 1)[1], **style)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:red", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        if name == "train loss" and keys and all(row.get(k, 1) > 0 for row in history for k in keys):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.13, top=0.86, wspace=0.18)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
