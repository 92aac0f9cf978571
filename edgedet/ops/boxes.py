"""Box conversion and every IoU variant: the one box module used by data, training, export and parity.

Boxes are ``(x1, y1, x2, y2)`` in pixels unless a name says otherwise; ``cxcywh`` is
``(centre x, centre y, width, height)``. All functions work on any leading batch dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cxcywh_to_xyxy", "xyxy_to_cxcywh", "scale_xywh", "cell_offsets", "box_area", "box_iou",
           "generalized_box_iou_pairs", "shape_iou"]


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Convert ``(cx, cy, w, h)`` boxes to ``(x1, y1, x2, y2)``.

    Args:
        boxes (Tensor[..., 4]): centre/size boxes.

    Returns:
        Tensor[..., 4]: corner boxes, same dtype.
    """
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def scale_xywh(boxes: Tensor, width: float, height: float) -> Tensor:
    """Multiply ``(x, y, w, h)``-ordered columns by ``(width, height, width, height)``.

    Python scalars rather than a tensor of scales: ``torch.jit.trace`` would record such a tensor
    as a constant on the tracing device, and a TorchScript file traced on the CPU would then fail
    on a GPU.

    Args:
        boxes (Tensor[..., 4]): fractions of the image.

    Returns:
        Tensor[..., 4]: pixels, same dtype.
    """
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x * width, y * height, w * width, h * height), dim=-1)


def cell_offsets(like: Tensor, dim: int) -> Tensor:
    """``0, 1, .., n - 1`` along ``dim`` (``n = like.shape[dim]``) on ``like``'s device and dtype,
    shaped to broadcast against ``like`` (size 1 on every other dimension).

    ``torch.jit.trace`` records the device of ``torch.arange`` as a constant, so a TorchScript file
    traced on the CPU would build its grid offsets on the CPU when run on a GPU. Inside a
    TorchScript trace the offsets are therefore a running sum of ones taken from ``like`` itself,
    which follows it to any device; eager mode and ONNX export (no devices there; ``Range``) use
    ``arange``.
    """
    if torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
        index = tuple(slice(None) if d == dim else slice(0, 1) for d in range(like.dim()))
        return torch.ones_like(like[index]).cumsum(dim) - 1
    shape = [1] * like.dim()
    shape[dim] = like.shape[dim]
    return torch.arange(like.shape[dim], device=like.device, dtype=like.dtype).view(shape)


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
    """Pairwise intersection over union, per leading batch index.

    Args:
        boxes1 (Tensor[..., N, 4]): ``(x1, y1, x2, y2)`` boxes.
        boxes2 (Tensor[..., M, 4]): ``(x1, y1, x2, y2)`` boxes, same leading dimensions.
        eps: added to the union so two empty boxes give 0, not NaN.

    Returns:
        Tensor[..., N, M]: IoU of every pair. Coordinates are continuous: a box from 0 to 1 has width
        1 (no "+1 pixel" convention).
    """
    lt = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # (..., N, M, 2)
    rb = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])  # (..., N, M, 2)
    inter = (rb - lt).clamp(min=0).prod(-1)  # (..., N, M)
    union = box_area(boxes1)[..., :, None] + box_area(boxes2)[..., None, :] - inter
    return inter / (union + eps)


def generalized_box_iou_pairs(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """GIoU of matching rows (Rezatofighi et al., CVPR 2019).

    Args:
        a (Tensor[N, 4]), b (Tensor[N, 4]): ``(x1, y1, x2, y2)`` boxes, compared row by row.

    Returns:
        Tensor[N]: IoU minus the fraction of the enclosing box covered by neither, in (-1, 1].
    """
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a) + box_area(b) - inter
    iou = inter / (union + eps)
    enclose = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(-1)
    return iou - (enclose - union) / (enclose + eps)


def shape_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU of box shapes placed on a common centre (YOLO's anchor matching).

    Args:
        wh1 (Tensor[N, 2]), wh2 (Tensor[M, 2]): positive widths and heights.

    Returns:
        Tensor[N, M].
    """
    inter = torch.minimum(wh1[:, None], wh2[None]).prod(-1)  # (N, M)
    return inter / (wh1.prod(-1)[:, None] + wh2.prod(-1)[None] - inter)
