"""The sample contract every edgedet dataset keeps, and the box/mask helpers that keep it.

A dataset has ``len()``, integer indexing and four attributes: ``class_names`` (the object
classes), ``task`` (``'localization'``, ``'detection'`` or ``'segmentation'``, the primary
task), ``has_masks`` and ``image_size`` ((H, W) when every image has it, else None).
``dataset[i]`` is a dict of numpy arrays (no torch here, so the runtime can share it):

- ``image``: uint8 [H, W, C]. C = 3 is **BGR**, the order OpenCV reads files and delivers
  frames in, and the order exported graphs take; C = 1 is grey.
- ``boxes``: float32 [N, 4], x1, y1, x2, y2 in pixels, tight and end-exclusive: an object
  covering pixel columns a..b has x1 = a and x2 = b + 1.
- ``labels``: int64 [N], ids into ``class_names``.
- ``masks`` (only when ``has_masks``): uint8 [N, H, W] instance masks of 0/1; ``boxes`` are
  exactly the tight boxes of these masks.
- ``semantic`` (only when ``has_masks``): uint8 [H, W], 0 for background, ``k + 1`` for object
  class ``k``, 255 for pixels to ignore. A segmenter's classes are therefore
  ``('background',) + class_names`` (:func:`segmentation_class_names`).
- ``id``: the sample index for synthetic sets, the image file stem for sets on disk.

The same index gives a bit-identical sample every time, in every process.
"""

from __future__ import annotations

import operator
from typing import Any, Sequence

import numpy as np

from edgedet.errors import DataError

__all__ = [
    "IGNORE", "SPLITS", "TASKS", "SampleDataset", "FirstSamples", "check_split", "segmentation_class_names",
    "tight_boxes", "semantic_from_instances", "empty_targets",
]

IGNORE = 255
SPLITS = ("train", "val")
TASKS = ("localization", "detection", "segmentation")


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise :class:`DataError`."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def segmentation_class_names(class_names: Sequence[str]) -> tuple[str, ...]:
    """Class names of the ``semantic`` mask: background first, then the object classes."""
    return ("background",) + tuple(class_names)


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight end-exclusive boxes of instance masks.

    Args:
        masks: [N, H, W], nonzero where the instance is.

    Returns:
        float32 [N, 4] x1, y1, x2, y2; an empty mask gives an all-zero row.
    """
    masks = np.asarray(masks)
    n = masks.shape[0]
    boxes = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return boxes
    rows = masks.any(axis=2)  # (N, H)
    cols = masks.any(axis=1)  # (N, W)
    present = rows.any(axis=1)
    h, w = masks.shape[1:]
    boxes[:, 0] = cols.argmax(axis=1)
    boxes[:, 1] = rows.argmax(axis=1)
    boxes[:, 2] = w - cols[:, ::-1].argmax(axis=1)
    boxes[:, 3] = h - rows[:, ::-1].argmax(axis=1)
    boxes[~present] = 0
    return boxes


def semantic_from_instances(masks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Semantic mask (0 background, label + 1 elsewhere) of instance masks [N, H, W].

    Where instances overlap the later one wins, matching the drawing order of synthetic sets.
    """
    masks = np.asarray(masks)
    semantic = np.zeros(masks.shape[1:], dtype=np.uint8)
    for mask, label in zip(masks, np.asarray(labels)):
        semantic[mask != 0] = int(label) + 1
    return semantic


def empty_targets(shape: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """``boxes`` and ``labels`` of an image without objects (and ``masks`` given its (H, W))."""
    targets = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros((0,), np.int64)}
    if shape is not None:
        targets["masks"] = np.zeros((0, *shape), np.uint8)
    return targets


class SampleDataset:
    """Base of edgedet's datasets: index checking and the attributes of the contract.

    Subclasses set the attributes and implement ``_sample(index)`` for 0 <= index < len.
    """

    name: str = "dataset"
    class_names: tuple[str, ...] = ()
    task: str = "detection"
    has_masks: bool = False
    image_size: tuple[int, int] | None = None
    split: str = "train"

    def __len__(self) -> int:
        raise NotImplementedError

    def _sample(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = operator.index(index)
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {self.name} with {n} samples")
        return self._sample(index)

    def __iter__(self):
        for i in range(len(self)):
            yield self._sample(i)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, len={len(self)}, "
                f"task={self.task!r}, classes={len(self.class_names)})")


class FirstSamples(SampleDataset):
    """The first ``n`` samples of ``dataset`` (all of them when it has fewer), same contract."""

    def __init__(self, dataset: SampleDataset, n: int) -> None:
        if n < 1:
            raise DataError(f"a subset needs at least one sample, got {n}")
        self.dataset, self.n = dataset, min(int(n), len(dataset))
        for attr in ("name", "class_names", "task", "has_masks", "image_size", "split"):
            setattr(self, attr, getattr(dataset, attr))

    def __len__(self) -> int:
        return self.n

    def _sample(self, index: int) -> dict[str, Any]:
        return self.dataset[index]
