"""Training transforms: dataset samples to network tensors and per-family targets.

A sample of any dataset (see :mod:`edgedet.data.sample`) is first *fitted* to the network input:
converted to the model's channel count and letterboxed to its input size with the runtime's one
letterbox (so training sees what deployment sees; masks pad with 255 = ignore). The fitted sample
is still uint8 BGR, which is what validation feeds the deploy graph. For training it is then
optionally flipped and turned into a float tensor exactly as the exported graph's preprocessing
does: ``/ 255``, BGR -> RGB, NHWC -> NCHW (1-channel images stay grey).

Targets are built by :func:`collate` with the model family's target encoder (see
:meth:`edgedet.models.spec.FamilySpec.target_encoder`; each family documents its layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from edgedet.data.sample import IGNORE
from edgedet.runtime.letterbox import letterbox

__all__ = ["FitSample", "fit_sample", "image_to_tensor", "hflip_sample", "TrainingSet", "collate", "Collate",
           "sample_channels"]


@dataclass(frozen=True)
class FitSample:
    """A sample fitted to the network input.

    Attributes:
        image: uint8 [H, W, C] at the input size, BGR for C = 3.
        boxes: float32 [N, 4] x1, y1, x2, y2 in input pixels.
        labels: int64 [N].
        semantic: uint8 [H, W] (0 background, k + 1 class k, 255 ignore), or None.
        index: the dataset index it came from.
        masks: uint8 [N, H, W] 0/1 instance masks at the input size (letterbox padding 0), one
            per box, or None (kept only for instance segmenters, see ``with_masks``).
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    semantic: np.ndarray | None
    index: int
    masks: np.ndarray | None = None


def sample_channels(sample: dict[str, Any]) -> int:
    """Channel count of a dataset sample's image."""
    image = sample["image"]
    return 1 if image.ndim == 2 else int(image.shape[2])


def _to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    have = image.shape[2]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if have == 3 and channels == 1:
        # OpenCV's BGR -> grey weights, as the exported graphs use for 1-channel models.
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[..., None]
    raise ValueError(f"cannot convert a {have}-channel image to {channels} channels")


def fit_sample(sample: dict[str, Any], input_size: tuple[int, int], channels: int, index: int = 0,
               with_semantic: bool = False, with_masks: bool = False) -> FitSample:
    """Convert a dataset sample to ``channels`` and letterbox it into ``input_size = (H, W)``.

    Boxes follow the image; the semantic mask is resized with nearest-neighbour sampling and its
    padding is 255 (ignored by the loss and the metrics). With ``with_masks`` the instance masks
    are resized the same way (nearest neighbour) and padded with 0; the boxes are not re-derived
    from the resized masks, so both follow the image as the runtime's letterbox maps them.
    """
    image = _to_channels(np.asarray(sample["image"]), channels)
    boxes = np.asarray(sample["boxes"], np.float32).reshape(-1, 4)
    labels = np.asarray(sample["labels"], np.int64).reshape(-1)
    semantic = sample.get("semantic") if with_semantic else None
    masks = _instance_masks(sample, len(boxes), image.shape[:2]) if with_masks else None
    if image.shape[:2] != tuple(input_size):
        image, lb = letterbox(image, tuple(input_size))
        boxes = boxes * np.float32(lb.scale) + np.array([lb.pad_x, lb.pad_y] * 2, np.float32)
        if semantic is not None:
            h, w = semantic.shape
            nh, nw = min(input_size[0], max(1, round(h * lb.scale))), min(input_size[1], max(1, round(w * lb.scale)))
            resized = cv2.resize(semantic, (nw, nh), interpolation=cv2.INTER_NEAREST)
            semantic = np.full(tuple(input_size), IGNORE, np.uint8)
            semantic[lb.pad_y:lb.pad_y + nh, lb.pad_x:lb.pad_x + nw] = resized
        if masks is not None:
            masks = _letterbox_masks(masks, tuple(input_size), lb)
    return FitSample(np.ascontiguousarray(image), boxes, labels,
                     None if semantic is None else np.ascontiguousarray(semantic, dtype=np.uint8), index,
                     None if masks is None else np.ascontiguousarray(masks, dtype=np.uint8))


def _instance_masks(sample: dict[str, Any], n: int, shape: tuple[int, int]) -> np.ndarray:
    masks = sample.get("masks")
    if masks is None:
        raise ValueError("this model trains on instance masks, but the dataset's samples have none")
    masks = (np.asarray(masks).reshape(n, *shape) != 0).astype(np.uint8)
    return masks


def _letterbox_masks(masks: np.ndarray, input_size: tuple[int, int], lb) -> np.ndarray:
    n, h, w = masks.shape
    nh, nw = min(input_size[0], max(1, round(h * lb.scale))), min(input_size[1], max(1, round(w * lb.scale)))
    out = np.zeros((n, *input_size), np.uint8)
    for i in range(n):  # cv2.resize takes at most 512 channels; instances go one by one
        out[i, lb.pad_y:lb.pad_y + nh, lb.pad_x:lb.pad_x + nw] = cv2.resize(masks[i], (nw, nh),
                                                                            interpolation=cv2.INTER_NEAREST)
    return out


def hflip_sample(s: FitSample) -> FitSample:
    """Mirror a fitted sample left to right (boxes and mask with it)."""
    w = s.image.shape[1]
    boxes = s.boxes.copy()
    boxes[:, [0, 2]] = w - s.boxes[:, [2, 0]]
    semantic = None if s.semantic is None else np.ascontiguousarray(s.semantic[:, ::-1])
    masks = None if s.masks is None else np.ascontiguousarray(s.masks[:, :, ::-1])
    return FitSample(np.ascontiguousarray(s.image[:, ::-1]), boxes, s.labels, semantic, s.index, masks)


def image_to_tensor(image: np.ndarray) -> Tensor:
    """uint8 [H, W, C] BGR (or grey) -> float32 [C, H, W] RGB (or grey) in 0..1, as the graphs do."""
    if image.shape[2] == 3:
        image = image[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


class TrainingSet(torch.utils.data.Dataset):
    """A dataset fitted to a model's input, with optional flips and an in-memory cache.

    Args:
        dataset: any edgedet dataset.
        input_size: network ``(H, W)``.
        channels: network input channels.
        with_semantic: keep semantic masks (segmenters).
        with_masks: keep instance masks (instance segmenters).
        flip: probability of a horizontal flip (0 for validation and for digits, which a mirror
            turns into other shapes).
        seed: flips are drawn from ``(seed, epoch, index)``, so a resumed run repeats them; set
            :attr:`epoch` before iterating each epoch.
        cache: keep fitted samples in memory after their first use.
        epoch_length: with a value, every epoch reads its own stretch of ``dataset``: item ``i``
            of epoch ``e`` is sample ``e * epoch_length + i`` (fresh synthetic samples each epoch;
            the dataset must hold ``epochs * epoch_length`` samples).
    """

    def __init__(self, dataset, input_size: tuple[int, int], channels: int, with_semantic: bool = False,
                 flip: float = 0.0, seed: int = 0, cache: bool = False, epoch_length: int | None = None,
                 with_masks: bool = False) -> None:
        self.dataset = dataset
        self.input_size = tuple(input_size)
        self.channels = channels
        self.with_semantic = with_semantic
        self.with_masks = with_masks
        self.flip = flip
        self.seed = seed
        self.epoch = 0
        self.epoch_length = epoch_length
        self.cache: dict[int, FitSample] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.dataset) if self.epoch_length is None else self.epoch_length

    def fitted(self, index: int) -> FitSample:
        """The fitted (letterboxed, un-augmented) sample ``index``."""
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        s = fit_sample(self.dataset[index], self.input_size, self.channels, index, self.with_semantic,
                       self.with_masks)
        if self.cache is not None:
            self.cache[index] = s
        return s

    def __getitem__(self, index: int) -> FitSample:
        if self.epoch_length is not None:
            index = self.epoch * self.epoch_length + index
        s = self.fitted(index)
        if self.flip > 0:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if rng.random() < self.flip:
                s = hflip_sample(s)
        return s


def collate(samples: Sequence[FitSample], encode: Callable[[Sequence[FitSample]], Tensor],
            frames: bool = False) -> dict[str, Any]:
    """Stack fitted samples into a batch.

    Args:
        encode: the model's target encoder (``get_entry(name).spec.target_encoder(cfg)``): fitted
            samples -> the targets its loss and evaluator take.
        frames: give ``images`` as the uint8 ``[B, H, W, 3]`` BGR frames the deploy graphs take
            (grey repeated into three equal channels, which the graphs' BGR -> grey weights turn
            back into the same grey) instead of the training tensor.

    Returns:
        dict with ``images`` float32 [B, C, H, W] (or frames), ``targets`` (the family's layout),
        ``boxes`` / ``labels`` (per-image lists of input-pixel tensors) and ``index``; when the
        samples carry instance masks also ``masks`` (per-image uint8 [N, H, W] tensors).
    """
    if frames:
        images = torch.from_numpy(np.stack([s.image if s.image.shape[2] == 3 else np.repeat(s.image, 3, axis=2)
                                            for s in samples]))  # (B, H, W, 3) uint8
    else:
        images = torch.stack([image_to_tensor(s.image) for s in samples])  # (B, C, H, W)
    boxes = [torch.from_numpy(s.boxes) for s in samples]
    labels = [torch.from_numpy(s.labels) for s in samples]
    batch = {"images": images, "targets": encode(samples), "boxes": boxes, "labels": labels,
             "index": [s.index for s in samples]}
    if samples and all(s.masks is not None for s in samples):
        batch["masks"] = [torch.from_numpy(s.masks) for s in samples]
    return batch


class Collate:
    """A picklable ``collate_fn`` for DataLoader workers: :func:`collate` with a target encoder."""

    def __init__(self, encode: Callable[[Sequence[FitSample]], Tensor], frames: bool = False) -> None:
        self.encode, self.frames = encode, frames

    def __call__(self, samples: Sequence[FitSample]) -> dict[str, Any]:
        return collate(samples, self.encode, self.frames)
