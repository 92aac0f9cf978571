"""Letterboxing: fit a frame into the network input keeping its aspect ratio, pad the rest.

The one letterbox of the project, used by the runtime, parity and export checks. The rule is the
one written into every exported graph's metadata (``letterbox``): scale by
``min(H / h, W / w)`` (also up), round the scaled size, centre it, pad with ``pad_value``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Letterbox", "letterbox", "boxes_to_source", "mask_to_source"]


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

    def mask_to_source(self, mask: np.ndarray) -> np.ndarray:
        """Map an ``[H, W]`` class map in input pixels back to the source frame ``[h, w]``."""
        return mask_to_source(mask, self)


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
    fill = pad_value if np.isscalar(pad_value) else np.asarray(pad_value, dtype=image.dtype)[:channels]
    if not np.isscalar(fill) and (fill == fill.flat[0]).all():
        fill = fill.flat[0]  # a scalar fill is several times faster than a per-channel one
    # Only the border is padded; the content is written over the rest.
    out[:pad_y] = fill
    out[pad_y + nh:] = fill
    out[pad_y:pad_y + nh, :pad_x] = fill
    out[pad_y:pad_y + nh, pad_x + nw:] = fill
    region = out[pad_y:pad_y + nh, pad_x:pad_x + nw]
    if (nh, nw) == (h, w):
        region[...] = image.reshape(region.shape)
    else:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        if pad_x == 0 and region.flags.c_contiguous and channels is not None:
            # Full-width content is one contiguous block: resize straight into it.
            resized = cv2.resize(image, (nw, nh), dst=region, interpolation=interp)
        else:
            resized = cv2.resize(image, (nw, nh), interpolation=interp)
        if resized is not region and not np.shares_memory(resized, region):
            region[...] = resized.reshape(region.shape)
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


def mask_to_source(mask: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Inverse of the letterbox for an ``[H, W]`` class map: crop the padding, resize (nearest).

    Class ids must stay ids, so the resize is nearest-neighbour; the result is uint8 when every id
    fits (the semantic-mask convention, 255 = ignore), else int32.
    """
    mask = np.asarray(mask)
    H, W = mask.shape[:2]
    h, w = lb.source_size
    nh, nw = min(H, max(1, round(h * lb.scale))), min(W, max(1, round(w * lb.scale)))
    crop = mask[lb.pad_y:lb.pad_y + nh, lb.pad_x:lb.pad_x + nw]
    if crop.dtype != np.uint8 and crop.size and 0 <= crop.min() and crop.max() <= 255:
        crop = crop.astype(np.uint8)
    elif crop.dtype == np.int64:
        crop = crop.astype(np.int32)  # OpenCV resizes 32-bit ints, not 64-bit
    if crop.shape[:2] == (h, w):
        return np.ascontiguousarray(crop)
    return cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_NEAREST)
