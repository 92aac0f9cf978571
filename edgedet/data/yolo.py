"""Detection sets in the YOLO text layout.

Layout::

    PATH/images/**/<name>.<jpg|png|...>
    PATH/labels/**/<name>.txt        one object per line: class cx cy w h (normalised 0..1)
    PATH/classes.txt                 one class name per line (or PATH/data.yaml with names:)

With ``PATH/images/train`` and ``PATH/images/val`` the split is taken from those folders,
otherwise every ``val_every``-th image (sorted) is 'val'. An image without a label file has no
objects, but a set without a ``labels/`` folder is an error. A label line of a polygon
(``class x1 y1 x2 y2 ...``, YOLO's segmentation format) contributes the polygon's bounding box.

Label files are UTF-8 (a BOM is fine) and are all read when the set is built, so a bad line is
reported before training starts. Boxes that reach a little past the image are clipped to it, with
one warning per set that counts them (the rule is :data:`edgedet.data.disk.BOX_TOLERANCE`'s).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgedet.data.disk import (check_boxes, count_past_edge, list_images, read_image, read_text, require_dir,
                                split_every, warn_clipped)
from edgedet.data.sample import SampleDataset, check_split
from edgedet.errors import DataError

__all__ = ["YoloDataset", "read_class_names"]


def _flow_collection(text: str) -> list[str] | dict[int, str]:
    """A YAML flow list ``[a, b]`` or mapping ``{0: a, 1: b}`` of unquoted words."""
    items = [v.strip().strip("'\"") for v in text.strip().strip("[]{}").split(",") if v.strip()]
    if text.strip().startswith("{"):
        pairs = [item.partition(":") for item in items]
        return {int(key): value.strip().strip("'\"") for key, _, value in pairs}
    return items


def _names_from_yaml(path: Path) -> list[str] | None:
    """The ``names:`` entry of a data.yaml: a flow list, a block list or an id -> name mapping.

    A full YAML parser would be a new dependency for one key; these three forms are what
    dataset tools write.
    """
    lines = read_text(path).splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("names:"):
            continue
        rest = line[len("names:"):].split("#")[0].strip()
        if rest:
            try:
                value = ast.literal_eval(rest)
            except (ValueError, SyntaxError):
                value = _flow_collection(rest)
            if isinstance(value, dict):
                return [str(value[k]) for k in sorted(value)]
            return [str(v) for v in value]
        names: dict[int, str] = {}
        for entry in lines[i + 1:]:
            if entry.strip() and not entry[:1].isspace() and not entry.startswith("-"):
                break  # the next top-level key
            item = entry.split("#")[0].strip()
            if not item:
                continue
            if item.startswith("-"):
                names[len(names)] = item[1:].strip().strip("'\"")
            else:
                key, _, value = item.partition(":")
                names[int(key)] = value.strip().strip("'\"")
        return [names[k] for k in sorted(names)]
    return None


def read_class_names(root: Path) -> tuple[str, ...]:
    """Class names from ``root/classes.txt`` or the ``names:`` of ``root/data.yaml``."""
    classes_txt = root / "classes.txt"
    if classes_txt.is_file():
        names = [line.strip() for line in read_text(classes_txt).splitlines()]
        names = [n for n in names if n]
        source = classes_txt
    else:
        source = next((root / n for n in ("data.yaml", "data.yml") if (root / n).is_file()), None)
        if source is None:
            raise DataError(f"no class names for {root}: expected {classes_txt} or {root / 'data.yaml'}")
        try:
            names = _names_from_yaml(source)
        except (ValueError, KeyError) as exc:
            raise DataError(f"cannot read names: from {source}: {exc}") from exc
        if names is None:
            raise DataError(f"{source} has no names: entry")
    if not names:
        raise DataError(f"{source} lists no class names")
    return tuple(names)


class YoloDataset(SampleDataset):
    """A YOLO-layout detection set at ``root`` (see the module docstring)."""

    name = "yolo"
    task = "detection"
    has_masks = False
    image_size = None

    def __init__(self, root: str | os.PathLike, split: str = "train", val_every: int = 10) -> None:
        self.split = check_split(split)
        self.root = require_dir(Path(root).expanduser(), "YOLO dataset")
        self.images_dir = require_dir(self.root / "images", "YOLO images")
        self.labels_dir = self.root / "labels"
        if not self.labels_dir.is_dir():
            raise DataError(f"no labels/ folder beside images/ in {self.root}")
        self.class_names = read_class_names(self.root)
        if (self.images_dir / "train").is_dir() and (self.images_dir / "val").is_dir():
            self.files = list_images(self.images_dir / split, recursive=True)
        else:
            self.files = split_every(list_images(self.images_dir, recursive=True), split, val_every)
        if not self.files and not list_images(self.images_dir, recursive=True):
            raise DataError(f"no images under {self.images_dir}")
        # Image-relative boxes and labels of every file, read once: errors surface now, and the
        # boxes that will be clipped are counted for the set's one warning.
        self._labels = [self._read_labels(self.label_path(path)) for path in self.files]
        warn_clipped(sum(count_past_edge(boxes) for boxes, _ in self._labels), self.root)

    def __len__(self) -> int:
        return len(self.files)

    def label_path(self, image_path: Path) -> Path:
        """The label file of an image: same relative path under labels/, suffix .txt."""
        return (self.labels_dir / image_path.relative_to(self.images_dir)).with_suffix(".txt")

    def _read_labels(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """A label file's boxes (``x1, y1, x2, y2`` relative to the image, float32 [N, 4]) and
        class ids (int64 [N]); none for an image without a label file."""
        boxes, labels = [], []
        if path.is_file():
            for number, line in enumerate(read_text(path).splitlines(), start=1):
                fields = line.split()
                if not fields:
                    continue
                where = f"{path} line {number}"
                try:
                    values = [float(v) for v in fields]
                except ValueError:
                    raise DataError(f"{where}: expected numbers, got {line.strip()!r}") from None
                if not np.isfinite(values).all():
                    raise DataError(f"{where}: a number that is not finite in {line.strip()!r}")
                if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
                    raise DataError(f"{where}: expected 'class cx cy w h' or 'class x1 y1 x2 y2 ...', "
                                    f"got {len(values)} values")
                label = values[0]
                if label != int(label) or not 0 <= label < len(self.class_names):
                    raise DataError(f"{where}: class {fields[0]} outside 0..{len(self.class_names) - 1} "
                                    f"({len(self.class_names)} classes)")
                if len(values) == 5:
                    cx, cy, w, h = values[1:]
                    if w <= 0 or h <= 0:
                        raise DataError(f"{where}: box with non-positive width or height")
                    box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
                else:
                    xs, ys = values[1::2], values[2::2]
                    box = [min(xs), min(ys), max(xs), max(ys)]
                boxes.append(box)
                labels.append(int(label))
        return np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)

    def _sample(self, index: int) -> dict[str, Any]:
        image_path = self.files[index]
        image = read_image(image_path)
        height, width = image.shape[:2]
        relative, labels = self._labels[index]
        boxes = check_boxes(relative * np.array([width, height, width, height], np.float32), height, width,
                            self.label_path(image_path))
        return {"image": image, "boxes": boxes, "labels": labels.copy(), "id": image_path.stem}
