"""Detection (and optionally polygon-mask) sets described by a COCO annotation json.

Boxes come from each annotation's ``bbox`` [x, y, w, h]; category ids are mapped to contiguous
labels 0..C-1 in ascending id order and named from ``categories``. Images are found relative
to the json's folder, or to ``images=DIR``. Crowd annotations (``iscrowd: 1``) are regions, not
objects: they give no box, and with masks they are marked ignore (255) in ``semantic``.

With ``masks=True`` instance masks are drawn from polygon (or uncompressed RLE) segmentations
and boxes become the tight boxes of those masks, as the sample contract requires.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgedet.data.disk import check_boxes, count_past_edge, read_image, split_every, warn_clipped
from edgedet.data.sample import IGNORE, SampleDataset, check_split, tight_boxes
from edgedet.errors import DataError

__all__ = ["CocoDataset"]


class CocoDataset(SampleDataset):
    """The images of one COCO json; every ``val_every``-th image (by file name) is 'val'.

    Args:
        annotations: path of the json file.
        split: 'train' or 'val'.
        images: folder the ``file_name`` entries are relative to (default: the json's folder).
        val_every: split rule; 0 gives every image to both splits (a json that is one split).
        masks: read segmentations into instance and semantic masks.
    """

    name = "coco"

    def __init__(self, annotations: str | os.PathLike, split: str = "train",
                 images: str | os.PathLike | None = None, val_every: int = 10,
                 masks: bool = False) -> None:
        self.split = check_split(split)
        self.json_path = Path(annotations).expanduser()
        if not self.json_path.is_file():
            raise DataError(f"COCO annotation file not found: {self.json_path}")
        self.images_dir = Path(images).expanduser() if images is not None else self.json_path.parent
        if not self.images_dir.is_dir():
            raise DataError(f"COCO images folder not found: {self.images_dir}")
        self.has_masks = bool(masks)
        self.task = "segmentation" if masks else "detection"
        try:
            data = json.loads(self.json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read COCO json {self.json_path}: {exc}") from exc
        if not isinstance(data, dict) or not all(k in data for k in ("images", "categories")):
            raise DataError(f"{self.json_path} is not a COCO annotation file (needs images and categories)")

        try:
            categories = sorted(data["categories"], key=lambda c: int(c["id"]))
            self.category_ids = tuple(int(c["id"]) for c in categories)
            self.class_names = tuple(str(c["name"]) for c in categories)
            self._label_of = {cid: i for i, cid in enumerate(self.category_ids)}
            records = {int(im["id"]): im for im in data["images"]}
            by_image: dict[int, list[dict]] = defaultdict(list)
            for ann in data.get("annotations", []):
                image_id, category = int(ann["image_id"]), int(ann["category_id"])
                if image_id not in records:
                    raise DataError(f"{self.json_path}: annotation {ann.get('id')} refers to unknown "
                                    f"image id {image_id}")
                if category not in self._label_of:
                    raise DataError(f"{self.json_path}: annotation {ann.get('id')} has category id "
                                    f"{category}, not among the categories {list(self.category_ids)}")
                by_image[image_id].append(ann)
            ordered = sorted(records.values(), key=lambda im: str(im["file_name"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{self.json_path}: malformed COCO entry ({exc!r})") from exc
        if not self.class_names:
            raise DataError(f"{self.json_path} has no categories")

        self.records = split_every(ordered, self.split, val_every)
        self._annotations = {int(im["id"]): by_image.get(int(im["id"]), []) for im in self.records}
        for record in self.records:
            path = self.images_dir / record["file_name"]
            if not path.is_file():
                raise DataError(f"{self.json_path}: image {path} not found")
        if not self.has_masks:
            warn_clipped(self._count_past_edge(), self.json_path)
        sizes = {(int(im.get("height", 0)), int(im.get("width", 0))) for im in self.records}
        only = sizes.pop() if len(sizes) == 1 else (0, 0)
        self.image_size = only if 0 not in only else None

    def __len__(self) -> int:
        return len(self.records)

    def _count_past_edge(self) -> int:
        """Boxes of this split that reach past their image (by the json's sizes) and will be clipped."""
        count = 0
        for record in self.records:
            objects = [a for a in self._annotations[int(record["id"])] if not a.get("iscrowd", 0)]
            try:
                h, w = int(record.get("height") or 0), int(record.get("width") or 0)
                xywh = np.array([a["bbox"] for a in objects], np.float64).reshape(-1, 4)
            except (KeyError, TypeError, ValueError):
                continue  # reported by _sample, with the image it belongs to
            if h <= 0 or w <= 0 or not objects:
                continue
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            count += count_past_edge(xyxy / np.array([w, h, w, h], np.float64))
        return count

    def _sample(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        path = self.images_dir / record["file_name"]
        image = read_image(path)
        h, w = image.shape[:2]
        expected = (int(record.get("height", h)), int(record.get("width", w)))
        if expected != (h, w):
            raise DataError(f"image {path} is {w}x{h} but {self.json_path} says "
                            f"{expected[1]}x{expected[0]}")
        annotations = self._annotations[int(record["id"])]
        objects = [a for a in annotations if not a.get("iscrowd", 0)]
        where = f"{self.json_path} (image {record['file_name']})"
        labels = np.array([self._label_of[int(a["category_id"])] for a in objects], np.int64)
        sample: dict[str, Any] = {"image": image, "id": Path(record["file_name"]).stem}

        if not self.has_masks:
            xywh = np.array([a["bbox"] for a in objects], np.float32).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            boxes = check_boxes(boxes, h, w, where)
            # Zero-area boxes exist in real COCO files; they can neither be drawn nor learned.
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            sample.update(boxes=boxes[keep], labels=labels[keep])
            return sample

        masks = np.stack([self._draw(a, h, w, where) for a in objects]) if objects else \
            np.zeros((0, h, w), np.uint8)
        keep = masks.reshape(len(masks), -1).any(axis=1)
        masks, labels = masks[keep], labels[keep]
        semantic = np.zeros((h, w), np.uint8)
        for a in annotations:
            if a.get("iscrowd", 0):
                semantic[self._draw(a, h, w, where) != 0] = IGNORE
        for mask, label in zip(masks, labels):
            semantic[mask != 0] = label + 1
        sample.update(boxes=tight_boxes(masks), labels=labels, masks=masks, semantic=semantic)
        return sample

    def _draw(self, annotation: dict, h: int, w: int, where: str) -> np.ndarray:
        """Rasterise one annotation's segmentation into a uint8 0/1 mask [h, w]."""
        segmentation = annotation.get("segmentation")
        mask = np.zeros((h, w), np.uint8)
        if isinstance(segmentation, list):
            polygons = [np.round(np.asarray(p, np.float64).reshape(-1, 2)).astype(np.int32)
                        for p in segmentation if len(p) >= 6]
            if polygons:
                cv2.fillPoly(mask, polygons, 1)
            return mask
        if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rh, rw = (int(v) for v in segmentation["size"])
            if (rh, rw) != (h, w):
                raise DataError(f"{where}: RLE size {rw}x{rh} does not match the {w}x{h} image")
            # Uncompressed RLE: alternating runs of 0s and 1s over the column-major image.
            counts = np.asarray(segmentation["counts"], np.int64)
            values = np.arange(len(counts)) % 2
            flat = np.repeat(values, counts).astype(np.uint8)
            if flat.size != h * w:
                raise DataError(f"{where}: RLE covers {flat.size} pixels, image has {h * w}")
            return flat.reshape(w, h).T.copy()
        raise DataError(f"{where}: annotation {annotation.get('id')} has no polygon or uncompressed "
                        "RLE segmentation (compressed RLE is not supported; use masks=false)")
