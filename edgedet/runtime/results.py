"""What running a graph on one frame gives: typed results in source pixels, and their JSON form.

The graph's outputs are read as they are: detections come out of the graph's NMS (the runtime
never suppresses boxes itself), instance segmenters add each detection's mask
(:mod:`edgedet.runtime.masks`), localizer outputs give at most one box, segmentation gives a class
map. Graphs exported with ``--no-nms`` give unsuppressed candidates: they are thresholded by
objectness x class probability and marked ``raw``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgedet.runtime.letterbox import Letterbox
from edgedet.runtime.masks import InstanceMasks, masks_to_source
from edgedet.runtime.metadata import GraphMetadata

__all__ = ["Result", "decode_outputs", "check_outputs", "rle_encode", "rle_decode", "RAW_CANDIDATE_CAP"]

# Raw graphs can give thousands of candidates above a low threshold; only the best are kept
# (by score, not by suppression) so drawing and JSON stay bounded.
RAW_CANDIDATE_CAP = 300


@dataclass
class Result:
    """One frame's result. Boxes and masks are in the source frame's pixels.

    Attributes:
        boxes: float32 ``[N, 4]`` x1, y1, x2, y2.
        scores: float32 ``[N]``.
        labels: int64 ``[N]`` class ids into ``class_names``.
        class_names: the model's class names.
        task: ``detection``, ``localization`` or ``segmentation``.
        mask: segmentation only: ``[h, w]`` class ids (uint8; 0 = background).
        raw: the graph has no NMS, so the boxes are unsuppressed candidates.
        image_size: ``(h, w)`` of the source frame.
        source, source_id, frame_index, timestamp: where the frame came from (set by streams).
        image: the source frame itself (streams set it so the result can be drawn).
        track_ids: with tracking, int64 ``[N]`` each detection's track id (``-1``: not tracked).
        masks: instance segmenters: each detection's mask (row i belongs to detection i); in
            the JSON record each detection gains ``mask``, COCO RLE in source-frame pixels.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    task: str
    image_size: tuple[int, int]
    mask: np.ndarray | None = None
    raw: bool = False
    source: str = ""
    source_id: int = 0
    frame_index: int = 0
    timestamp: float | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    track_ids: np.ndarray | None = None
    masks: InstanceMasks | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        names = self.class_names
        return [names[i] if 0 <= i < len(names) else str(i) for i in self.labels.tolist()]

    def pixel_counts(self) -> dict[str, int]:
        """Segmentation: pixels per class present in the mask, by class name."""
        if self.mask is None:
            return {}
        counts = np.bincount(self.mask.ravel().astype(np.int64), minlength=len(self.class_names))
        out = {}
        for value in np.flatnonzero(counts):
            name = self.class_names[value] if value < len(self.class_names) else (
                "ignore" if value == 255 else str(int(value)))
            out[name] = int(counts[value])
        return out

    def plot(self, image: np.ndarray | None = None, copy: bool = True) -> np.ndarray:
        """Draw the result on ``image`` (default: the frame it came from); returns the drawing."""
        from edgedet.runtime.draw import (draw_detections, draw_instance_masks, draw_legend, instance_legend,
                                          mask_legend, overlay_mask)

        image = self.image if image is None else image
        if image is None:
            raise ValueError("no image to draw on: pass one, or use a result from model.stream()")
        image = image.copy() if copy else image
        if self.mask is not None:
            image = overlay_mask(image, self.mask)
            draw_legend(image, mask_legend(self.mask, self.class_names))
        if self.masks is not None and len(self.masks):
            image = draw_instance_masks(image, self.masks, self.labels, self.class_names, self.track_ids,
                                        legend=False)
        if len(self.boxes):
            image = draw_detections(image, self.boxes, self.labels, self.scores, self.class_names,
                                    track_ids=self.track_ids)
        if self.masks is not None and len(self.masks):  # last, so no box tag covers the key
            draw_legend(image, instance_legend(self.labels, self.class_names))
        return image

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of this result (what ``--save-json`` writes per frame)."""
        h, w = self.image_size
        doc: dict[str, Any] = {
            "frame": self.frame_index,
            "timestamp": None if self.timestamp is None else round(float(self.timestamp), 6),
            "source": self.source,
            "width": w,
            "height": h,
        }
        if self.task != "segmentation":
            doc["raw"] = self.raw
            boxes = np.round(self.boxes.astype(np.float64), 2).tolist()
            scores = np.round(self.scores.astype(np.float64), 5).tolist()
            doc["detections"] = [{"box": box, "score": score, "label": label, "name": name}
                                 for box, score, label, name in zip(boxes, scores, self.labels.tolist(), self.names)]
            if self.track_ids is not None:  # null: a detection no track follows (a weak, lone one)
                for det, track_id in zip(doc["detections"], self.track_ids.tolist()):
                    det["track_id"] = track_id if track_id >= 0 else None
            if self.masks is not None:
                for i, det in enumerate(doc["detections"]):
                    det["mask"] = self.masks.rle(i)
        if self.mask is not None:
            doc["segmentation"] = {"pixels": self.pixel_counts(), "rle": rle_encode(self.mask)}
        return doc


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Run-length encoding of a class map, row-major: ``values[i]`` repeated ``counts[i]`` times."""
    flat = np.asarray(mask).ravel()
    if flat.size == 0:
        return {"size": list(mask.shape), "order": "row-major", "values": [], "counts": []}
    starts = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1])
    counts = np.diff(np.concatenate([starts, [flat.size]]))
    return {"size": [int(s) for s in mask.shape], "order": "row-major",
            "values": flat[starts].astype(np.int64).tolist(), "counts": counts.astype(np.int64).tolist()}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`rle_encode`: the uint8 class map."""
    values = np.asarray(rle["values"], dtype=np.int64)
    flat = np.repeat(values, np.asarray(rle["counts"], dtype=np.int64))
    dtype = np.uint8 if flat.size == 0 or flat.max() <= 255 else np.int32
    return flat.astype(dtype).reshape(rle["size"])


def _empty(task: str, names: tuple[str, ...], size: tuple[int, int], raw: bool = False) -> Result:
    return Result(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), names, task,
                  size, raw=raw)


def decode_outputs(outputs: dict[str, np.ndarray], index: int, letterbox: Letterbox, metadata: GraphMetadata,
                   conf: float | None) -> Result:
    """Image ``index`` of a batch of graph outputs -> a :class:`Result` in source pixels.

    Args:
        outputs: output name -> batched array, as a backend returns them.
        index: which image of the batch.
        letterbox: how that image was letterboxed.
        metadata: the graph's metadata (task, class names).
        conf: keep detections scoring at least this (``None``: what the graph kept, or 0.25 for
            graphs that do not threshold).
    """
    names, task = metadata.class_names, metadata.task
    size = letterbox.source_size
    if "mask" in outputs:
        mask = letterbox.mask_to_source(outputs["mask"][index])
        segmentation = metadata.segmentation
        result = _empty("segmentation", (segmentation and segmentation.class_names) or names, size)
        result.mask = mask
        return result
    if "num_dets" in outputs:
        n = int(outputs["num_dets"][index])
        boxes = outputs["boxes"][index, :n]
        scores = outputs["scores"][index, :n].astype(np.float32)
        labels = outputs["labels"][index, :n].astype(np.int64)
        keep = labels >= 0
        if conf is not None:
            keep &= scores >= conf
        result = Result(letterbox.boxes_to_source(boxes[keep]), scores[keep], labels[keep], names, task, size)
        if "masks" in outputs:  # only the valid rows are mapped, each inside its box
            result.masks = masks_to_source(outputs["masks"][index, :n][keep], result.boxes, letterbox,
                                           metadata.input.size)
        return result
    if "predictions" in outputs:
        # cx, cy, w, h, objectness, class probabilities. Every (box, class) pair scoring
        # objectness x class probability >= conf is a candidate, as it would enter the graph's
        # NMS; nothing is suppressed.
        pred = outputs["predictions"][index].astype(np.float32, copy=False)
        class_scores = pred[:, 5:] * pred[:, 4:5]
        rows, labels = np.nonzero(class_scores >= (0.25 if conf is None else conf))
        scores = class_scores[rows, labels]
        order = np.argsort(-scores, kind="stable")[:RAW_CANDIDATE_CAP]
        rows, labels, scores = rows[order], labels[order], scores[order]
        cx, cy, w, h = pred[rows, :4].T
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).reshape(-1, 4)
        return Result(letterbox.boxes_to_source(boxes), scores, labels.astype(np.int64), names, task, size, raw=True)
    if "score" in outputs and "box" in outputs:
        score = float(outputs["score"][index])
        if score < (0.5 if conf is None else conf):
            return _empty(task, names, size)
        box = letterbox.boxes_to_source(outputs["box"][index].reshape(1, 4))
        label = np.array([int(outputs["label"][index])], np.int64)
        return Result(box, np.array([score], np.float32), label, names, task, size)
    raise ValueError(f"unrecognised graph outputs {sorted(outputs)}")


def check_outputs(names: Sequence[str]) -> None:
    """Raise ``ValueError`` unless the output names are one of the exported-graph layouts."""
    names = set(names)
    if not ({"num_dets", "boxes", "scores", "labels"} <= names or "predictions" in names or "mask" in names
            or {"score", "box", "label"} <= names):
        raise ValueError(f"unrecognised graph outputs {sorted(names)}")
    if "masks" in names and not {"num_dets", "boxes", "scores", "labels"} <= names:
        raise ValueError(f"a masks output needs the detector outputs (num_dets, boxes, scores, labels) "
                         f"beside it; got {sorted(names)}")
