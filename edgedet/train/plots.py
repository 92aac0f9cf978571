"""Training curves: losses and validation metrics per epoch as a PNG, the best epoch marked.

Uses matplotlib's object API with the Agg canvas, so it never touches a display or the global
pyplot backend of the calling program.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from edgedet.runtime.files import atomic_path

__all__ = ["plot_history", "plotted_series", "PLOTTED_METRICS"]

# Validation metrics drawn, in this order, when a run logs them: the headline of every task. The
# rest (per-class means and weighted forms of the segmentation table) stay in results.csv; more
# lines than colours would make two metrics look alike.
PLOTTED_METRICS = ("accuracy", "mean_iou", "map50", "map50_95", "map75", "mask_map50", "mask_map50_95",
                   "pixel_accuracy", "mean_accuracy", "mean_f1")
# matplotlib's tab10 without its red, which marks the best epoch.
_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
            "tab:olive", "tab:cyan")


def plotted_series(history: Sequence[dict[str, float]]) -> tuple[list[tuple[str, list[str]]], dict[str, str]]:
    """What :func:`plot_history` draws: ``[(panel title, [column, ...]), ...]`` and each column's label."""
    first = history[0] if history else {}
    losses = [k for k in first if k.startswith("train/")]
    metrics = [f"val/{m}" for m in PLOTTED_METRICS if f"val/{m}" in first]
    labels = {k: k.split("/", 1)[1] for k in losses + metrics}
    if "val/fitness" in first:
        same = next((k for k in metrics if all(row.get(k) == row.get("val/fitness") for row in history)), None)
        if same is None:
            metrics.append("val/fitness")
            labels["val/fitness"] = "fitness"
        else:
            labels[same] = f"{labels[same]} = fitness"
    panels = [("train loss", losses), ("validation", metrics)]
    return panels, labels


def plot_history(history: Sequence[dict[str, float]], path: str | os.PathLike, best_epoch: int | None = None,
                 title: str = "") -> Path:
    """Draw ``history`` (one dict per epoch with an ``epoch`` key) into ``path``: the ``train/*``
    losses in the left panel, the headline ``val/*`` metrics (:data:`PLOTTED_METRICS`) and the
    fitness in the right one, the best epoch dashed. A fitness equal to one of the metrics (U-Net's
    is its mean IoU) is drawn once, labelled as both, so neither hides the other."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels, labels = plotted_series(history)
    fig = Figure(figsize=(11, 4), dpi=90)
    FigureCanvasAgg(fig)
    epochs = [row["epoch"] for row in history]
    for i, (name, keys) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, key in enumerate(keys):
            bold = key == "train/loss" or "fitness" in labels[key]
            ax.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", markersize=3,
                    label=labels[key], color=_COLOURS[j % len(_COLOURS)], linewidth=2.2 if bold else 1.2)
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
