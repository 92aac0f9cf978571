"""YOLOv3 decoding: raw per-scale head maps to boxes and probabilities, with darknet's formulas.

Each scale's head is ``[B, A * (5 + C), H, W]``; channel ``a * (5 + C) + k`` holds value ``k`` of
anchor ``a``: ``tx, ty, tw, th, objectness, C class logits`` (darknet's yolo-layer layout). Darknet
decodes a cell ``(x, y)`` as ``cx = (x + sigmoid(tx)) * stride``, ``w = exp(tw) * anchor_w`` and
applies a sigmoid (not a softmax) to objectness and to every class independently.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from edgedet.ops.boxes import cell_offsets

__all__ = ["decode_yolo"]


def decode_yolo(outputs: Sequence[Tensor], anchors: Tensor, strides: Sequence[int]) -> Tensor:
    """Decode YOLO head maps into one table of predictions.

    Traceable and exportable with dynamic batch, height and width: the grid comes from each map's
    runtime shape, and nothing depends on the values.

    Args:
        outputs (list[Tensor[B, A * (5 + C), H_s, W_s]]): raw head maps, one per scale, in the
            model's output order (stride 32 first).
        anchors (Tensor[S, A, 2]): anchor ``(w, h)`` in input pixels for each scale, same order.
        strides (Sequence[int]): input pixels per cell for each scale, same order.

    Returns:
        Tensor[B, N, 5 + C] with ``N = sum(A * H_s * W_s)``: ``cx, cy, w, h`` in input pixels,
        objectness probability, C class probabilities. Rows are grouped by scale in output order
        and ordered ``(anchor, y, x)`` within a scale.
    """
    if not (len(outputs) == len(strides) == anchors.shape[0]):
        raise ValueError(f"{len(outputs)} head maps, {len(strides)} strides and "
                         f"{anchors.shape[0]} anchor sets must agree")
    num_anchors = anchors.shape[1]
    tables = []
    for head, scale_anchors, stride in zip(outputs, anchors, strides):
        b, _, h, w = head.shape
        p = head.view(b, num_anchors, -1, h, w).permute(0, 1, 3, 4, 2)  # (B, A, H, W, 5 + C)
        xs = cell_offsets(p[..., 0], 3)  # (1, 1, 1, W)
        ys = cell_offsets(p[..., 0], 2)  # (1, 1, H, 1)
        anchor_wh = scale_anchors.to(head.dtype).view(1, num_anchors, 1, 1, 2)
        cx = (torch.sigmoid(p[..., 0]) + xs) * stride  # (B, A, H, W)
        cy = (torch.sigmoid(p[..., 1]) + ys) * stride
        wh = torch.exp(p[..., 2:4]) * anchor_wh  # (B, A, H, W, 2)
        probs = torch.sigmoid(p[..., 4:])  # objectness, then classes
        table = torch.cat((cx.unsqueeze(-1), cy.unsqueeze(-1), wh, probs), dim=-1)
        tables.append(table.reshape(b, -1, table.shape[-1]))  # (B, A * H * W, 5 + C)
    return torch.cat(tables, dim=1)
