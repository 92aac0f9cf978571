"""Box conversion and IoU: the one box converter used by data, training, export and parity.

Boxes are ``(x1, y1, x2, y2)`` in pixels unless a name says otherwise; ``cxcywh`` is
``(centre x, centre y, width, height)``. All functions work on any leading batch dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cxcywh_to_xyxy", "xyxy_to_cxcywh", "box_area", "box_iou"]


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Convert ``(cx, cy, w, h)`` boxes to ``(x1, y1, x2, y2)``.

    Args:
        boxes (Tensor[..., 4]): centre/size boxes.

    Returns:
        Tensor[..., 4]: corner boxes, same dtype.
    """
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """Convert ``(x1, y1, x2, y2)`` boxes to ``(cx, cy, w, h)``.

    Args:
        boxes (Tensor[..., 4]): corner boxes with ``x1 <= x2``, ``y1 <= y2``.

    Returns:
        Tensor[..., 4]: centre/size boxes, same dtype.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``(x1, y1, x2, y2)`` boxes (Tensor[..., 4] -> Tensor[...]); inverted boxes give 0."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-9) -> Tensor:
    """Pairwise intersection over union.

    Args:
        boxes1 (Tensor[N, 4]): ``(x1, y1, x2, y2)`` boxes.
        boxes2 (Tensor[M, 4]): ``(x1, y1, x2, y2)`` boxes.
        eps: added to the union so two empty boxes give 0, not NaN.

    Returns:
        Tensor[N, M]: IoU of every pair. Coordinates are continuous: a box from 0 to 1 has width
        1 (no "+1 pixel" convention).
    """
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    inter = (rb - lt).clamp(min=0).prod(-1)  # (N, M)
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    return inter / (union + eps)
