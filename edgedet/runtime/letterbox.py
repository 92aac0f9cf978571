"""Letterboxing: fit a frame into the network input keeping its aspect ratio, pad the rest.

The one letterbox of the project, used by the runtime, parity and export checks. The rule is the
one written into every exported graph's metadata (``letterbox``): scale by
``min(H / h, W / w)`` (also up), round the scaled size, centre it, pad with ``pad_value``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Letterbox", "letterbox", "boxes_to_source"]


@dataclass(frozen=True)
class Letterbox:
    """Where the source frame landed in the network input: ``input = source * scale + pad``."""

    scale: float
    pad_x: int
    pad_y: int
    source_size: tuple[int, int]  # (h, w) of the frame

    def boxes_to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``(x1, y1, x2, y2)`` boxes in input pixels back to source pixels, clipped."""
        return boxes_to_source(boxes, self)


def letterbox(image: np.ndarray, size: tuple[int, int], pad_value: int | tuple[int, ...] = 114,
              out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` [h, w, C] uint8 into ``size = (H, W)`` keeping its aspect ratio.

    Args:
        image: the frame, any channel count.
        size: network input ``(height, width)``.
        pad_value: fill of the unused border.
        out: optional preallocated ``[H, W, C]`` buffer reused across frames.

    Returns:
        The letterboxed ``[H, W, C]`` image (``out`` when given) and the mapping back.
    """
    h, w = image.shape[:2]
    H, W = size
    scale = min(H / h, W / w)
    nh, nw = min(H, max(1, round(h * scale))), min(W, max(1, round(w * scale)))
    pad_y, pad_x = (H - nh) // 2, (W - nw) // 2
    channels = image.shape[2] if image.ndim == 3 else None
    shape = (H, W) if channels is None else (H, W, channels)
    if out is None or out.shape != shape or out.dtype != image.dtype:
        out = np.empty(shape, dtype=image.dtype)
    out[...] = pad_value if np.isscalar(pad_value) else np.asarray(pad_value, dtype=image.dtype)[:channels]
    if (nh, nw) == (h, w):
        resized = image
    else:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (nw, nh), interpolation=interp)
        if channels is not None and resized.ndim == 2:
            resized = resized[..., None]
    out[pad_y:pad_y + nh, pad_x:pad_x + nw] = resized
    return out, Letterbox(scale, pad_x, pad_y, (h, w))


def boxes_to_source(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Inverse of the letterbox for ``[..., 4]`` xyxy boxes, clipped to the source frame."""
    boxes = np.asarray(boxes, dtype=np.float32).copy()
    boxes[..., [0, 2]] = (boxes[..., [0, 2]] - lb.pad_x) / lb.scale
    boxes[..., [1, 3]] = (boxes[..., [1, 3]] - lb.pad_y) / lb.scale
    h, w = lb.source_size
    boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, w)
    boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, h)
    return boxes
