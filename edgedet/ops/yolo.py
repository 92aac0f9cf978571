"""YOLOv3 decoding: raw per-scale head maps to boxes and probabilities, with darknet's formulas.

Each scale's head is ``[B, A * (5 + C), H, W]``; channel ``a * (5 + C) + k`` holds value ``k`` of
anchor ``a``: ``tx, ty, tw, th, objectness, C class logits`` (darknet's yolo-layer layout). Darknet
decodes a cell ``(x, y)`` as ``cx = (x + sigmoid(tx)) * stride``, ``w = exp(tw) * anchor_w`` and
applies a sigmoid (not a softmax) to objectness and to every class independently.

:class:`YoloBoxCoder` is the one implementation of that box parametrisation: the decoder below and
the training loss (:class:`edgedet.train.losses.YoloLoss`) both use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from edgedet.ops.boxes import cell_offsets

__all__ = ["YoloBoxCoder", "decode_yolo"]


class YoloBoxCoder:
    """Darknet's box parametrisation relative to a cell and an anchor (torchvision's ``BoxCoder``
    pattern): ``cx = (sigmoid(tx) + cell_x) * stride``, ``w = exp(tw) * anchor_w``.

    Args:
        max_log_wh: clamp ``tw, th`` to at most this before ``exp`` (training, where an untrained
            head must not overflow); None leaves them as they are (the exported decoder).
    """

    def __init__(self, max_log_wh: float | None = None) -> None:
        self.max_log_wh = max_log_wh

    def decode(self, t: Tensor, cell_x: Tensor, cell_y: Tensor, anchor_wh: Tensor, stride: float) -> Tensor:
        """Raw ``t[..., 4]`` ``(tx, ty, tw, th)`` -> ``(cx, cy, w, h)`` in input pixels.

        ``cell_x`` and ``cell_y`` broadcast against ``t[..., 0]``, ``anchor_wh`` against ``t[..., 2:4]``.
        """
        cx = (torch.sigmoid(t[..., 0]) + cell_x) * stride
        cy = (torch.sigmoid(t[..., 1]) + cell_y) * stride
        log_wh = t[..., 2:4] if self.max_log_wh is None else t[..., 2:4].clamp(max=self.max_log_wh)
        wh = torch.exp(log_wh) * anchor_wh
        return torch.cat((cx.unsqueeze(-1), cy.unsqueeze(-1), wh), dim=-1)

    def encode(self, boxes: Tensor, cell_xy: Tensor, anchor_wh: Tensor, stride: float) -> Tensor:
        """``(cx, cy, w, h)`` boxes ``[..., 4]`` in input pixels -> the regression targets
        ``(sigmoid(tx), sigmoid(ty), tw, th)``: the centre's offset in its cell (0..1) and the log
        of the size over the anchor's."""
        offset = boxes[..., :2] / stride - cell_xy
        return torch.cat((offset, torch.log(boxes[..., 2:] / anchor_wh)), dim=-1)


_CODER = YoloBoxCoder()


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
        boxes = _CODER.decode(p[..., :4], xs, ys, anchor_wh, stride)  # (B, A, H, W, 4)
        probs = torch.sigmoid(p[..., 4:])  # objectness, then classes
        table = torch.cat((boxes, probs), dim=-1)
        tables.append(table.reshape(b, -1, table.shape[-1]))  # (B, A * H * W, 5 + C)
    return torch.cat(tables, dim=1)
