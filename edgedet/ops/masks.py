"""Instance masks from prototypes and coefficients (YOLACT), and their cropping to boxes.

Bolya et al., "YOLACT: Real-time Instance Segmentation" (2019), arXiv:1904.02689: the network
predicts P prototype masks per image and P coefficients per detection; an instance's mask is
``sigmoid(coefficients @ prototypes)``, cropped to its box. Pure functions over tensors, shared by
the training loss, the deploy graph and the tests; all of them trace and export with dynamic
batch, height, width and detection count.

Conventions: boxes are ``(x1, y1, x2, y2)`` in pixels of the grid the masks live on, end-exclusive
like edgedet's dataset boxes; a pixel ``(x, y)`` is inside a box when its centre
``(x + 0.5, y + 0.5)`` is, so the tight box of a mask crops nothing of it.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["assemble_mask_logits", "box_interior", "crop_to_boxes", "masks_from_logits", "downsample_masks",
           "coefficient_table"]


def assemble_mask_logits(coefficients: Tensor, prototypes: Tensor) -> Tensor:
    """Mask logits of detections, ``coefficients @ prototypes`` per image.

    Args:
        coefficients (Tensor[B, K, P]): per-detection coefficients.
        prototypes (Tensor[B, P, H, W]): the image's prototype masks.

    Returns:
        Tensor[B, K, H, W]: logits (``sigmoid`` of them is the mask probability).
    """
    b, p, h, w = prototypes.shape
    logits = torch.bmm(coefficients, prototypes.reshape(b, p, h * w))  # (B, K, H * W)
    return logits.reshape(b, coefficients.shape[1], h, w)


def coefficient_table(maps: List[Tensor], num_anchors: int) -> Tensor:
    """Per-anchor coefficient maps -> one table whose rows match :func:`edgedet.ops.yolo.decode_yolo`'s.

    Args:
        maps (list[Tensor[B, A * P, H_s, W_s]]): coefficient maps, one per scale, in the model's
            output order.
        num_anchors: A.

    Returns:
        Tensor[B, N, P], rows grouped by scale and ordered ``(anchor, y, x)`` within a scale.
    """
    tables = []
    for m in maps:
        b, _, h, w = m.shape
        t = m.reshape(b, num_anchors, -1, h, w).permute(0, 1, 3, 4, 2)  # (B, A, H, W, P)
        tables.append(t.reshape(b, -1, t.shape[-1]))  # (B, A * H * W, P)
    return torch.cat(tables, dim=1)


def box_interior(boxes: Tensor, height: int, width: int) -> Tensor:
    """Which pixels of an ``height x width`` grid have their centre inside each box.

    Args:
        boxes (Tensor[..., 4]): ``(x1, y1, x2, y2)`` in pixels of that grid.

    Returns:
        Tensor[..., H, W] bool.
    """
    ys = torch.arange(height, device=boxes.device).to(boxes.dtype) + 0.5  # (H,)
    xs = torch.arange(width, device=boxes.device).to(boxes.dtype) + 0.5  # (W,)
    x1, y1, x2, y2 = boxes[..., 0:1], boxes[..., 1:2], boxes[..., 2:3], boxes[..., 3:4]  # (..., 1) each
    inside_y = (ys > y1) & (ys < y2)  # (..., H)
    inside_x = (xs > x1) & (xs < x2)  # (..., W)
    return inside_y.unsqueeze(-1) & inside_x.unsqueeze(-2)


def crop_to_boxes(masks: Tensor, boxes: Tensor) -> Tensor:
    """Zero every pixel of ``masks[..., H, W]`` outside its box ``boxes[..., 4]`` (see module)."""
    h, w = masks.shape[-2], masks.shape[-1]
    return masks * box_interior(boxes, h, w).to(masks.dtype)


def masks_from_logits(logits: Tensor, boxes: Tensor, scale: int = 1) -> Tensor:
    """Final uint8 0/1 masks: logits upsampled, cropped to the boxes, thresholded.

    Args:
        logits (Tensor[B, K, h, w]): mask logits on the prototype grid.
        boxes (Tensor[B, K, 4]): boxes in pixels of the *output* grid (``h * scale, w * scale``).
        scale: upsampling factor from the prototype grid to the output grid. The logits are
            upsampled bilinearly (half-pixel centres, ``align_corners=False``, ONNX
            ``Resize`` with ``coordinate_transformation_mode=half_pixel``) before the threshold,
            which gives smoother edges than thresholding first.

    Returns:
        Tensor[B, K, h * scale, w * scale] uint8: 1 where ``logit > 0`` (probability > 0.5) and
        the pixel centre lies inside the box.
    """
    if scale != 1:
        logits = F.interpolate(logits, scale_factor=float(scale), mode="bilinear", align_corners=False)
    h, w = logits.shape[-2], logits.shape[-1]
    keep = (logits > 0) & box_interior(boxes.to(logits.dtype), h, w)
    return keep.to(torch.uint8)


def downsample_masks(masks: Tensor, factor: int) -> Tensor:
    """Binary masks ``[N, H, W]`` -> their area fraction on a grid ``factor`` times coarser.

    Returns:
        Tensor[N, H // factor, W // factor] float32 in 0..1 (soft targets for the mask loss).
    """
    masks = masks.float()
    n, h, w = masks.shape
    if factor == 1:
        return masks
    if n == 0:
        return masks.new_zeros(0, h // factor, w // factor)
    return F.avg_pool2d(masks[:, None], factor, factor)[:, 0]
