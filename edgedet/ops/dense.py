"""Decoding the dense map of a fully convolutional localizer into per-window detections.

A localizer turned fully convolutional (:func:`edgedet.models.localizer.fully_convolutional`)
outputs one localizer head per window: ``[B, 5 + C, gh, gw]``, window ``(i, j)`` covering input
pixels ``[i * stride, i * stride + window_h) x [j * stride, j * stride + window_w)``. Each window
is decoded exactly as the localizer decodes its single image (:func:`decode_localizer`: sigmoid
p_c, sigmoid box as fractions of the window, softmax classes); its box is then moved by the
window's offset. The result has the raw detector layout, so the one detector post-processing
(score = p_c x class probability, class-aware NMS) serves it unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edgedet.ops.boxes import cell_offsets, xyxy_to_cxcywh
from edgedet.ops.localizer import decode_localizer

__all__ = ["decode_dense_localizer", "window_origins"]


def window_origins(like: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """Top-left corners of the windows of a dense map.

    Args:
        like (Tensor[B, gh, gw]): any tensor laid out like the windows.
        stride: input pixels between neighbouring windows.

    Returns:
        ys (Tensor[1, gh, 1]), xs (Tensor[1, 1, gw]): window origins in input pixels, on
        ``like``'s device and dtype (traced as shape operations, so dynamic H, W stay free).
    """
    return cell_offsets(like, 1) * stride, cell_offsets(like, 2) * stride


def decode_dense_localizer(head: Tensor, window: tuple[int, int], stride: int) -> Tensor:
    """Turn a dense map of localizer heads into detector predictions.

    Args:
        head (Tensor[B, 5 + C, gh, gw]): raw localizer outputs, one per window.
        window: ``(height, width)`` of one window, the localizer's input size.
        stride: input pixels between neighbouring windows.

    Returns:
        Tensor[B, gh * gw, 5 + C]: ``cx, cy, w, h`` in input pixels, the window's object
        probability (sigmoid p_c), class probabilities; rows in row-major window order (the
        layout of :func:`edgedet.ops.grid.decode_grid` and the YOLO decoder).
    """
    b, d, gh, gw = head.shape
    p = head.permute(0, 2, 3, 1)  # (B, gh, gw, 5 + C)
    score, box, _, class_scores = decode_localizer(p.reshape(-1, d), window)  # per window
    ys, xs = window_origins(p[..., 0], stride)  # (1, gh, 1), (1, 1, gw)
    box = box.reshape(b, gh, gw, 4)
    x1, y1, x2, y2 = box.unbind(-1)
    box = torch.stack((x1 + xs, y1 + ys, x2 + xs, y2 + ys), dim=-1)  # (B, gh, gw, 4) input pixels
    out = torch.cat((xyxy_to_cxcywh(box), score.reshape(b, gh, gw, 1),
                     class_scores.reshape(b, gh, gw, -1)), dim=-1)
    return out.reshape(b, -1, d)
