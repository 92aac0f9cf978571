"""Decoding the single-object localizer head.

Raw head layout, per image, ``5 + C`` values: ``[p_c logit, box (4), class logits (C)]``; the box
passes through a sigmoid to ``(cx, cy, w, h)`` as fractions of the input width/height.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edgedet.ops.boxes import cxcywh_to_xyxy, scale_xywh

__all__ = ["decode_localizer"]


def decode_localizer(head: Tensor, input_size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Turn localizer logits into a detection per image.

    Args:
        head (Tensor[B, 5 + C]): raw localizer output.
        input_size: ``(height, width)`` of the network input in pixels.

    Returns:
        score (Tensor[B]): probability that an object is present (sigmoid of p_c).
        box (Tensor[B, 4]): ``(x1, y1, x2, y2)`` in input pixels.
        label (Tensor[B] int64): most likely class.
        class_scores (Tensor[B, C]): class probabilities (softmax).
    """
    h, w = input_size
    score = torch.sigmoid(head[:, 0])
    box = cxcywh_to_xyxy(scale_xywh(torch.sigmoid(head[:, 1:5]), w, h))
    class_scores = torch.softmax(head[:, 5:], dim=1)
    label = class_scores.argmax(dim=1)
    return score, box, label, class_scores
