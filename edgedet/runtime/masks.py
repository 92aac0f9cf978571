"""Instance masks in the runtime: from a graph's per-detection masks to the source frame, and
COCO run-length encoding (numpy and OpenCV only).

An instance-segmentation graph gives, besides the detector outputs, ``masks`` uint8
``[B, K, Hm, Wm]``: one 0/1 mask per detection row, cropped to its box, at the network input's
resolution (``Hm, Wm = H, W``) or a lower one. :func:`masks_to_source` maps the valid rows back
through the letterbox (the same mapping :func:`~edgedet.runtime.letterbox.boxes_to_source` applies
to boxes) into :class:`InstanceMasks`: each instance's pixels inside its source-frame box.

Decisions:

* Only the box region is mapped: the source pixels whose centre lies inside the detection's
  source-frame box (the graph's own crop rule, so a mask never leaves its box, even from a graph
  that did not crop). Each is sampled at its centre from the graph's mask with one affine warp
  (OpenCV ``warpAffine``, inverse map), so the work is the box's area, never the full frame, and
  the letterbox padding never enters.
  Measured with ``benchmarks/instance_masks.py`` (2-core Xeon CPU shared with other work, load
  average ~13; table in ``benchmarks/results/instance_masks.md``), mapping all instances of a
  frame and COCO-encoding them, median per frame: on a 320x320 MNIST-Clutter frame with 8 digits,
  0.73 ms (network input 320x320) and 0.69 ms (128x128) this way, against 0.90 ms and 1.12 ms
  the full-frame way (each mask's letterbox crop resized to the whole frame, then encoded
  whole); on a 720x1280 frame with 8 digits (input 320x320), 6.0 ms against 42 ms. Mapping all
  K = 100 rows instead of the ``num_dets`` valid ones cost 11-18 ms (320x320) and 137 ms (720p).
* Bilinear sampling thresholded at 0.5 (OpenCV's rounding of the interpolated 0/1 uint8 value), so
  an enlarged mask has smooth edges rather than blocks; at scale 1 it is the identity. (The
  metadata's ``masks.upsample`` describes how the graph itself made its masks; mapping them to
  the frame is this module's choice. ``nearest`` is there for callers who want blocks.)
* Masks live as crops (``origins`` + ``crops``), and full-frame arrays are made only on request:
  at 1080p a full ``[N, h, w]`` stack is N x 2 MB per frame.
* COCO RLE (the ``{"size": [h, w], "counts": "..."}`` that pycocotools and faster-coco-eval
  read): run lengths over the mask in column-major (Fortran) order, starting with a run of zeros,
  and the counts written in COCO's compressed string form: each count after the second minus the
  count two before it, as little-endian groups of 5 bits, 0x20 flagging more groups, sign from
  bit 0x10 of the last group, plus 48, one character per group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from edgedet.runtime.letterbox import Letterbox

__all__ = ["InstanceMasks", "masks_to_source", "check_masks_output", "rle_counts", "counts_to_string",
           "string_to_counts", "encode_mask", "decode_mask", "INTERPOLATION"]

# How masks_to_source samples the graph's masks (linear: bilinear, thresholded at 0.5).
INTERPOLATION = {"linear": cv2.INTER_LINEAR, "bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


@dataclass
class InstanceMasks:
    """Binary masks of N instances in a ``size = (h, w)`` frame, stored as box-sized crops.

    Attributes:
        size: ``(h, w)`` of the frame.
        origins: int64 ``[N, 2]`` ``(x0, y0)``: where each crop's top-left pixel sits in the frame.
        crops: N bool arrays ``[hi, wi]``, the instance's pixels inside its box (possibly empty).
    """

    size: tuple[int, int]
    origins: np.ndarray
    crops: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.crops)

    @classmethod
    def empty(cls, size: tuple[int, int]) -> InstanceMasks:
        return cls(size, np.zeros((0, 2), np.int64), [])

    def select(self, keep: np.ndarray | Sequence[int]) -> InstanceMasks:
        """The instances picked by a boolean or index array (e.g. the rows a filter kept)."""
        index = np.arange(len(self))[np.asarray(keep)] if len(self) else np.zeros(0, np.int64)
        return InstanceMasks(self.size, self.origins[index], [self.crops[i] for i in index.tolist()])

    def areas(self) -> np.ndarray:
        """Pixels of each instance, int64 ``[N]``."""
        return np.array([int(np.count_nonzero(c)) for c in self.crops], np.int64)

    def full(self, i: int) -> np.ndarray:
        """Instance ``i`` as a bool ``[h, w]`` frame-sized mask."""
        out = np.zeros(self.size, bool)
        x0, y0 = self.origins[i].tolist()
        crop = self.crops[i]
        out[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        return out

    def to_array(self) -> np.ndarray:
        """All instances as bool ``[N, h, w]`` (memory: N x h x w bytes)."""
        return np.stack([self.full(i) for i in range(len(self))]) if len(self) else np.zeros((0, *self.size), bool)

    def rle(self, i: int) -> dict[str, Any]:
        """Instance ``i`` as COCO compressed RLE ``{"size": [h, w], "counts": str}``."""
        h, w = self.size
        return {"size": [h, w], "counts": counts_to_string(rle_counts(self.crops[i], self.origins[i], self.size))}


def check_masks_output(masks: Any, boxes: np.ndarray, input_size: tuple[int, int],
                       resolution: tuple[int, int] | None = None) -> None:
    """Raise ``ValueError`` unless ``masks`` is the contract's uint8 (or bool) ``[B, K, Hm, Wm]``.

    ``K`` and ``B`` must match ``boxes`` ``[B, K, 4]``; ``(Hm, Wm)`` must be ``resolution`` when the
    metadata documents one, else the network input ``input_size`` (or the same aspect, smaller).
    """
    shape = list(getattr(masks, "shape", ()))
    dtype = getattr(masks, "dtype", None)
    if dtype not in (np.uint8, np.bool_) or len(shape) != 4:
        raise ValueError(f"output masks should be uint8 [B, K, H, W], got {dtype} {shape}")
    if shape[:2] != list(boxes.shape[:2]):
        raise ValueError(f"output masks {shape} does not match boxes {list(boxes.shape)} (B, K)")
    H, W = input_size
    hm, wm = shape[2:]
    if resolution is not None:
        if (hm, wm) != tuple(resolution):
            raise ValueError(f"output masks are {hm}x{wm}, the metadata says {resolution[0]}x{resolution[1]}")
    elif not (0 < hm <= H and 0 < wm <= W and abs(hm / H - wm / W) <= 1.0 / min(hm, wm)):
        raise ValueError(f"output masks are {hm}x{wm}, which is not the {H}x{W} network input "
                         f"or a lower resolution of it")


def masks_to_source(masks: np.ndarray, source_boxes: np.ndarray, lb: Letterbox, input_size: tuple[int, int],
                    interpolation: str = "linear") -> InstanceMasks:
    """Map a graph's masks of N detections back to the source frame, box region by box region.

    Args:
        masks: uint8 ``[N, Hm, Wm]`` 0/1, the valid rows of one image's ``masks`` output.
        source_boxes: float ``[N, 4]`` the same detections' boxes already in source pixels
            (``lb.boxes_to_source``), clipped to the frame: each mask is kept inside its box
            (the pixels whose centre lies inside it, as the graph crops).
        lb: how the frame was letterboxed.
        input_size: the network input ``(H, W)``; masks at a lower resolution are scaled by
            ``Hm / H``, ``Wm / W``.
        interpolation: ``linear`` (thresholded at 0.5) or ``nearest``.
    """
    h, w = lb.source_size
    n = len(masks)
    if n == 0:
        return InstanceMasks.empty((h, w))
    flags = INTERPOLATION[interpolation] | cv2.WARP_INVERSE_MAP
    H, W = input_size
    ry, rx = masks.shape[1] / H, masks.shape[2] / W
    if masks.dtype == np.bool_:
        masks = masks.view(np.uint8)
    # Frame pixel u (centre u + 0.5) sits at input x = (u + 0.5) * scale + pad_x, mask x = input x * rx,
    # which is mask pixel index (mask x - 0.5).
    sx, sy = lb.scale * rx, lb.scale * ry
    # The box's pixels: those whose centre lies inside it (x1 <= u + 0.5 < x2), the graph's own crop rule.
    rect = np.ceil(np.asarray(source_boxes, np.float64) - 0.5).astype(np.int64)
    rect[:, [0, 2]] = rect[:, [0, 2]].clip(0, w)
    rect[:, [1, 3]] = rect[:, [1, 3]].clip(0, h)
    crops = []
    for i, (x0, y0, x1, y1) in enumerate(rect.tolist()):
        if x1 <= x0 or y1 <= y0:
            crops.append(np.zeros((max(0, y1 - y0), max(0, x1 - x0)), bool))
            continue
        matrix = np.array([[sx, 0.0, (x0 + 0.5) * sx + lb.pad_x * rx - 0.5],
                           [0.0, sy, (y0 + 0.5) * sy + lb.pad_y * ry - 0.5]])
        crop = cv2.warpAffine(masks[i], matrix, (x1 - x0, y1 - y0), flags=flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        crops.append(crop.astype(bool))
    return InstanceMasks((h, w), rect[:, :2].copy(), crops)


# ---------------------------------------------------------------------------------------------
# COCO run-length encoding


def rle_counts(crop: np.ndarray, origin: Sequence[int] = (0, 0), size: tuple[int, int] | None = None) -> list[int]:
    """COCO's uncompressed run lengths of a ``size`` frame that is 0 except for ``crop`` at
    ``origin = (x0, y0)``: column-major, alternating 0-runs and 1-runs, the first a 0-run (length
    0 when the frame's first pixel is set). Without ``size``, the crop is the whole frame."""
    crop = np.asarray(crop, bool)
    h, w = crop.shape if size is None else size
    x0, y0 = (int(v) for v in origin)
    ch, cw = crop.shape
    if h * w == 0:
        return [0]  # as COCO writes an empty frame
    if not crop.any():
        return [h * w]
    # Only the crop's columns, full height, are laid out; the columns before and after are zeros.
    block = np.zeros((cw, h), bool)
    block[:, y0:y0 + ch] = crop.T
    flat = block.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    if flat[0]:
        runs.insert(0, 0)
    runs[0] += x0 * h
    trail = (w - x0 - cw) * h
    if flat[-1]:
        if trail:
            runs.append(trail)
    else:
        runs[-1] += trail
    return runs


def counts_to_string(counts: Sequence[int]) -> str:
    """COCO's compressed string form of run lengths (see the module docstring)."""
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        while True:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative differences end in -1
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(c + 48 + (0x20 if more else 0)))
            if not more:
                break
    return "".join(out)


def string_to_counts(text: str) -> list[int]:
    """Inverse of :func:`counts_to_string`."""
    counts: list[int] = []
    pos, n = 0, len(text)
    while pos < n:
        x, shift = 0, 0
        while True:
            c = ord(text[pos]) - 48
            pos += 1
            x |= (c & 0x1F) << shift
            shift += 5
            if not c & 0x20:
                if c & 0x10:
                    x |= -1 << shift
                break
            if pos >= n:
                raise ValueError("truncated RLE string")
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A frame-sized ``[h, w]`` binary mask (nonzero = set) as COCO compressed RLE."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an [h, w] mask, got shape {list(mask.shape)}")
    h, w = mask.shape
    return {"size": [h, w], "counts": counts_to_string(rle_counts(mask != 0))}


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed string or a list of counts) -> uint8 ``[h, w]`` 0/1."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    counts = string_to_counts(counts.decode() if isinstance(counts, bytes) else counts) \
        if isinstance(counts, (str, bytes)) else [int(c) for c in counts]
    if sum(counts) != h * w or any(c < 0 for c in counts):
        raise ValueError(f"RLE counts cover {sum(counts)} pixels, not {h}x{w}")
    values = np.arange(len(counts)) % 2
    flat = np.repeat(values.astype(np.uint8), counts)
    return flat.reshape(w, h).T.copy()
