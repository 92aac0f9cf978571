"""Model size and compute: parameter count and GFLOPs at a given input size."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "model_gflops"]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers such as BN statistics and anchors excluded)."""
    return sum(p.numel() for p in model.parameters())


def model_gflops(model: nn.Module, input_size: tuple[int, int] | None = None, batch: int = 1) -> float:
    """Floating-point operations of one forward pass, in units of 1e9.

    Counted by torch's own ``FlopCounterMode`` (a multiply-add counts as 2 FLOPs, convolutions and
    matrix products only, as darknet and most papers count). The model runs on the ``meta`` device,
    so no real computation happens and the model itself is left untouched.

    Args:
        model: a model made by :func:`edgedet.models.create_model` (has ``cfg``).
        input_size: ``(height, width)``; defaults to the config's ``input_size``.
        batch: batch size of the counted pass.
    """
    h, w = input_size or model.cfg.input_size
    meta = copy.deepcopy(model).to("meta").eval()
    x = torch.empty(batch, model.cfg.in_channels, h, w, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(x)
    return counter.get_total_flops() / 1e9
