"""The table ``edgedet models`` prints: every registered variant with its size and compute."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgedet.models.profile import count_parameters, model_gflops
from edgedet.models.registry import create_model, get_entry, list_models

__all__ = ["ModelSummary", "summarize_models", "model_table"]


@dataclass(frozen=True)
class ModelSummary:
    name: str
    family: str
    task: str
    input_shape: tuple[int, int, int]  # C, H, W
    num_classes: int
    params: int
    gflops: float


def summarize_models() -> list[ModelSummary]:
    """One summary per registered model at its default config and input size."""
    rows = []
    for name in list_models():
        entry = get_entry(name)
        with torch.device("meta"):  # sizes and FLOPs need no real weights
            model = create_model(name)
        cfg = model.cfg
        rows.append(ModelSummary(name, entry.family, entry.task, (cfg.in_channels, *cfg.input_size),
                                 cfg.num_classes, count_parameters(model), model_gflops(model)))
    return rows


def model_table() -> str:
    """A plain-text table of :func:`summarize_models`."""
    header = ("model", "family", "task", "input CxHxW", "classes", "params", "GFLOPs")
    lines = [header]
    for s in summarize_models():
        lines.append((s.name, s.family, s.task, "x".join(map(str, s.input_shape)), str(s.num_classes),
                      f"{s.params / 1e6:.2f}M" if s.params >= 1e5 else f"{s.params / 1e3:.1f}K",
                      f"{s.gflops:.3f}" if s.gflops < 1 else f"{s.gflops:.2f}"))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    right = {4, 5, 6}
    out = []
    for row in lines:
        out.append("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                             for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(out)
