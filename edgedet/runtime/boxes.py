"""Numpy box helpers: IoU of corner boxes and of box shapes, for code that runs without torch.

The torch versions live in :mod:`edgedet.ops.boxes`; these serve the runtime, the parity checker
and anchor clustering, which work on numpy arrays. Boxes are ``(x1, y1, x2, y2)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_area", "box_iou", "shape_iou", "xyxy_to_cxcywh", "cxcywh_to_xyxy"]


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of boxes ``[..., 4]``; inverted boxes give 0."""
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``a[N, 4]`` and ``b[M, 4]`` -> ``[N, M]``.

    Two boxes without area are alike (IoU 1) only when they are the same box, otherwise 0, so
    comparing degenerate outputs of two backends still tells equal from different.
    """
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    same = (np.abs(a[:, None] - b[None]).max(-1) == 0) * 1.0
    return np.where(union > 0, inter / np.maximum(union, 1e-12), same)


def shape_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of box shapes ``wh[N, 2]`` against ``anchors[K, 2]`` placed on a common centre -> [N, K]."""
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    return inter / (wh[:, None].prod(-1) + anchors[None].prod(-1) - inter)


def xyxy_to_cxcywh(boxes: np.ndarray, min_size: float = 0.0) -> np.ndarray:
    """``(x1, y1, x2, y2)`` rows ``[N, 4]`` -> ``(cx, cy, w, h)``; sizes at least ``min_size``."""
    wh = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] + wh / 2, np.maximum(wh, min_size)], axis=1)


def cxcywh_to_xyxy(boxes: np.ndarray, min_size: float = 0.0) -> np.ndarray:
    """``(cx, cy, w, h)`` rows ``[N, 4]`` -> ``(x1, y1, x2, y2)``; sizes at least ``min_size``."""
    half = np.maximum(boxes[:, 2:4], min_size) / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)
