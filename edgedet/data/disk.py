"""Reading and checking dataset files on disk, shared by the Penn-Fudan, YOLO and COCO sets.

Every problem a user's files can have becomes a :class:`~edgedet.errors.DataError` that names
the offending file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence, TypeVar

import cv2
import numpy as np

from edgedet.errors import DataError
from edgedet.runtime.sources import IMAGE_SUFFIXES
from edgedet.runtime.sources import read_image as decode_image

__all__ = [
    "IMAGE_SUFFIXES", "BOX_TOLERANCE", "BOX_CLIP_FRACTION", "DataWarning", "read_image", "read_instance_ids",
    "read_text", "require_dir", "list_images", "split_every", "check_boxes", "count_past_edge", "warn_clipped",
]

# The one rule for boxes that reach past the image, used by every set on disk: up to
# BOX_TOLERANCE pixels (annotation tools round to whole pixels) or BOX_CLIP_FRACTION of the image
# side, whichever is more, a box is clipped to the image; further out it is an error. Public
# datasets hold many boxes drawn a little past the frame around objects it cuts; each set counts
# the ones that reach past by more than rounding (PAST_EDGE_ROUNDING of the side) and says so in
# one warning.
BOX_TOLERANCE = 1.0
BOX_CLIP_FRACTION = 0.05
PAST_EDGE_ROUNDING = 1e-3


class DataWarning(UserWarning):
    """Something in a dataset was repaired rather than refused (boxes clipped to the image)."""

T = TypeVar("T")


def _read_encoded(path: Path) -> np.ndarray:
    try:
        # np.fromfile + imdecode instead of imread: imread cannot open non-ASCII paths on Windows
        # and says nothing about why a read failed.
        return np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 BGR [H, W, 3] (grey files are expanded to three channels) with
    the runtime's reader; :class:`DataError` naming the file when it cannot."""
    path = Path(path)
    image = decode_image(path) if path.is_file() else None
    if image is None:
        reason = "corrupt or unsupported format" if path.is_file() else "file not found"
        raise DataError(f"cannot read image {path}: {reason}")
    return image


def read_instance_ids(path: str | os.PathLike) -> np.ndarray:
    """Read an instance-id mask image as int32 [H, W]: 0 background, each other value one instance.

    OpenCV expands palette PNGs to colours, so a colour mask is mapped back to ids: every
    distinct non-black colour becomes one instance (numbered in colour order).
    """
    path = Path(path)
    try:
        mask = cv2.imdecode(_read_encoded(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    except (cv2.error, MemoryError):  # e.g. a header that declares more pixels than OpenCV decodes
        mask = None
    if mask is None:
        reason = "not a readable image" if path.is_file() else "file not found"
        raise DataError(f"cannot read mask {path}: {reason}")
    if mask.ndim == 2:
        return mask.astype(np.int32)
    channels = mask[..., :3].astype(np.int32)
    if (channels[..., 0] == channels[..., 1]).all() and (channels[..., 1] == channels[..., 2]).all():
        return channels[..., 0]
    packed = (channels[..., 0] << 16) | (channels[..., 1] << 8) | channels[..., 2]
    colours, ids = np.unique(packed, return_inverse=True)
    if colours[0] != 0:
        ids = ids + 1  # no black pixel at all: every colour is an instance
    return ids.reshape(packed.shape).astype(np.int32)


def read_text(path: str | os.PathLike) -> str:
    """A text file of a dataset (labels, class names): UTF-8, a leading BOM allowed; a
    :class:`DataError` naming the file and line when it cannot be read or is not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        encoding = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise DataError(f"{path} line {line}: not UTF-8 text{encoding}; save it as UTF-8") from None


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """Return ``path`` if it is a folder, else raise a DataError describing ``what`` it should hold."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{what} folder not found: {path}")
    return path


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by suffix, case-insensitive), sorted by path."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def split_every(items: Sequence[T], split: str, val_every: int) -> list[T]:
    """Deterministic split: item i is 'val' when (i + 1) % val_every == 0, else 'train'.

    ``val_every=0`` gives every item to both splits (for a folder that is already one split).
    """
    if val_every < 0:
        raise DataError(f"val_every must be >= 0, got {val_every}")
    if val_every == 0:
        return list(items)
    is_val = [(i + 1) % val_every == 0 for i in range(len(items))]
    return [item for item, v in zip(items, is_val) if v == (split == "val")]


def check_boxes(boxes: np.ndarray, height: int, width: int, source: str | os.PathLike) -> np.ndarray:
    """Clip boxes (pixels, ``x1, y1, x2, y2``) to the image, raising a DataError for any that
    reach past it by more than ``max(BOX_TOLERANCE px, BOX_CLIP_FRACTION * side)`` or have
    x2 < x1 or y2 < y1 (see the rule at :data:`BOX_TOLERANCE`)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return boxes
    if not np.isfinite(boxes).all():
        raise DataError(f"{source}: box with a non-finite coordinate")
    limits = np.array([width, height, width, height], np.float32)
    slack = np.maximum(BOX_TOLERANCE, BOX_CLIP_FRACTION * limits)
    outside = (boxes < -slack) | (boxes > limits + slack)
    if outside.any():
        row = int(np.flatnonzero(outside.any(axis=1))[0])
        x1, y1, x2, y2 = (float(v) for v in boxes[row])
        raise DataError(f"{source}: box ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}) lies outside the "
                        f"{width}x{height} image")
    if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        raise DataError(f"{source}: box with x2 < x1 or y2 < y1")
    return np.clip(boxes, 0, limits)


def count_past_edge(boxes: np.ndarray) -> int:
    """Boxes in image-relative coordinates (``x1, y1, x2, y2`` in 0..1) that reach past the image
    by more than rounding and by no more than :data:`BOX_CLIP_FRACTION`: the ones
    :func:`check_boxes` will clip for a reason worth a warning (further out is an error)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    past = ((boxes < -PAST_EDGE_ROUNDING) | (boxes > 1 + PAST_EDGE_ROUNDING)).any(axis=1)
    far = ((boxes < -BOX_CLIP_FRACTION) | (boxes > 1 + BOX_CLIP_FRACTION)).any(axis=1)
    return int((past & ~far).sum())


def warn_clipped(count: int, where: str | os.PathLike) -> None:
    """The one warning a dataset gives for its boxes that reach past the image edge."""
    if count:
        boxes = f"{count} boxes reach" if count != 1 else "1 box reaches"
        warnings.warn(f"{where}: {boxes} past the image edge (by at most {BOX_CLIP_FRACTION:.0%} of its side); "
                      f"clipped to the image", DataWarning, stacklevel=3)
