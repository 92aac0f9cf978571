"""Grid-detector targets and decoding (the course seed's 2x3 grid on 48x60 images).

The image is divided into ``gh x gw`` cells. Each cell predicts ``5 + C`` values: ``p_c`` (is an
object's centre in this cell), ``(tx, ty)`` the centre as a fraction of the cell, ``(tw, th)`` the
size as a fraction of the image, and C class logits. The raw head is ``[B, 5 + C, gh, gw]``;
``tx..th`` pass through a sigmoid, ``p_c`` through a sigmoid, classes through a softmax.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edgedet.ops.boxes import cell_offsets, cxcywh_to_xyxy, xyxy_to_cxcywh

__all__ = ["encode_grid", "decode_grid_targets", "decode_grid"]


def _cell_size(grid: tuple[int, int], input_size: tuple[int, int]) -> tuple[float, float]:
    return input_size[0] / grid[0], input_size[1] / grid[1]


def encode_grid(boxes: Tensor, labels: Tensor, grid: tuple[int, int],
                input_size: tuple[int, int]) -> Tensor:
    """Per-cell training targets from one image's boxes.

    Args:
        boxes (Tensor[N, 4]): ``(x1, y1, x2, y2)`` in input pixels.
        labels (Tensor[N]): class ids.
        grid: ``(rows, cols)``.
        input_size: ``(height, width)`` in pixels.

    Returns:
        Tensor[rows, cols, 6] float32: ``(present, tx, ty, tw, th, label)`` per cell; ``label`` is
        -1 and the rest 0 in empty cells. A cell owns the box whose centre lies in it; when two
        centres share a cell the larger box wins (the seed's data never does this).
    """
    gh, gw = grid
    ch, cw = _cell_size(grid, input_size)
    target = torch.zeros(gh, gw, 6, dtype=torch.float32)
    target[..., 5] = -1
    if boxes.numel() == 0:
        return target
    cxcywh = xyxy_to_cxcywh(boxes.to(torch.float64))
    areas = cxcywh[:, 2] * cxcywh[:, 3]
    for i in torch.argsort(areas).tolist():  # ascending, so larger boxes overwrite smaller ones
        cx, cy, w, h = cxcywh[i].tolist()
        gx = min(max(int(cx // cw), 0), gw - 1)
        gy = min(max(int(cy // ch), 0), gh - 1)
        target[gy, gx] = torch.tensor([1.0, cx / cw - gx, cy / ch - gy, w / input_size[1],
                                       h / input_size[0], float(labels[i])], dtype=torch.float64)
    return target


def decode_grid_targets(target: Tensor, input_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`encode_grid`: boxes (Tensor[K, 4] xyxy pixels) and labels (Tensor[K])
    of the occupied cells, in row-major cell order."""
    gh, gw = target.shape[:2]
    ch, cw = _cell_size((gh, gw), input_size)
    gy, gx = torch.nonzero(target[..., 0] > 0.5, as_tuple=True)
    t = target[gy, gx].to(torch.float64)
    cxcywh = torch.stack(((gx + t[:, 1]) * cw, (gy + t[:, 2]) * ch,
                          t[:, 3] * input_size[1], t[:, 4] * input_size[0]), dim=-1)
    return cxcywh_to_xyxy(cxcywh).to(torch.float32), t[:, 5].to(torch.int64)


def decode_grid(head: Tensor, input_size: tuple[int, int]) -> Tensor:
    """Raw grid head -> detector predictions.

    Args:
        head (Tensor[B, 5 + C, gh, gw]): raw grid-detector output.
        input_size: ``(height, width)`` of the network input.

    Returns:
        Tensor[B, gh * gw, 5 + C]: ``cx, cy, w, h`` in input pixels, objectness probability,
        class probabilities; rows in row-major cell order. The same layout as YOLO's decoder, so
        NMS and parity treat both detectors alike.
    """
    b, _, gh, gw = head.shape
    h, w = input_size
    p = head.permute(0, 2, 3, 1)  # (B, gh, gw, 5 + C)
    ys = cell_offsets(p[..., 0], 1)  # (1, gh, 1)
    xs = cell_offsets(p[..., 0], 2)  # (1, 1, gw)
    txy = torch.sigmoid(p[..., 1:3])
    cx = (xs + txy[..., 0]) * (w / gw)
    cy = (ys + txy[..., 1]) * (h / gh)
    size = torch.sigmoid(p[..., 3:5])
    wh = torch.stack((size[..., 0] * w, size[..., 1] * h), dim=-1)
    obj = torch.sigmoid(p[..., 0:1])
    cls = torch.softmax(p[..., 5:], dim=-1)
    out = torch.cat((cx[..., None], cy[..., None], wh, obj, cls), dim=-1)  # (B, gh, gw, 5 + C)
    return out.reshape(b, gh * gw, -1)
