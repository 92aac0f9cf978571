"""Contact sheets of dataset samples: the picture ``edgedet data preview`` writes.

Each tile shows one sample scaled to about ``cell`` pixels (nearest-neighbour for small images,
so their pixels stay visible), its semantic mask as a translucent overlay, its boxes with class
names, and a title bar with the sample id and object count. A header names the dataset and
shows the class colours.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgedet.data.spec import build_dataset
from edgedet.errors import DataError
from edgedet.runtime.draw import draw_detections, overlay_mask, palette
from edgedet.runtime.files import atomic_path

__all__ = ["render_preview", "preview_dataset", "PREVIEW_SUFFIXES"]

PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg")

_BACKGROUND = (34, 32, 30)
_TITLE_BAR = (58, 54, 50)
_TEXT = (235, 235, 235)
_MUTED = (170, 170, 170)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GAP = 8
_TITLE_H = 20
_MAX_LEGEND = 24


def _fit(image: np.ndarray, cell: int) -> tuple[np.ndarray, float]:
    """Scale an image so its longer side is about ``cell``; returns it (BGR) and the factor."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    factor = cell / max(h, w)
    if factor >= 1.5:
        # Whole-number nearest-neighbour upscaling keeps every source pixel the same size.
        factor = float(round(factor))
        image = cv2.resize(image, (w * int(factor), h * int(factor)), interpolation=cv2.INTER_NEAREST)
    elif factor > 1.0:
        size = (round(w * factor), round(h * factor))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        factor = size[0] / w
    elif factor < 1.0:
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        factor = size[0] / w
    else:
        image = image.copy()
    return image, factor


def _render_tile(sample: dict[str, Any], class_names: tuple[str, ...], cell: int, colors: list) -> np.ndarray:
    image, factor = _fit(sample["image"], cell)
    if "semantic" in sample:
        semantic = cv2.resize(sample["semantic"], (image.shape[1], image.shape[0]),
                              interpolation=cv2.INTER_NEAREST)
        overlay_mask(image, semantic, alpha=0.45, colors=colors)
    boxes = np.asarray(sample["boxes"], np.float32) * np.float32(factor)
    draw_detections(image, boxes, sample["labels"], class_names=class_names, colors=colors,
                    thickness=max(1, int(round(factor / 2.5))) if factor > 1 else None,
                    font_scale=0.4)
    return image


def _title(sample: dict[str, Any]) -> str:
    count = len(sample["labels"])
    objects = "no objects" if count == 0 else f"{count} object" + ("s" if count > 1 else "")
    sample_id = sample.get("id", "")
    shown = f"#{sample_id}" if isinstance(sample_id, (int, np.integer)) else str(sample_id)
    return f"{shown}  {objects}"


def _fit_text(text: str, width: int, scale: float) -> str:
    """Shorten ``text`` with '..' until it fits ``width`` pixels."""
    if cv2.getTextSize(text, _FONT, scale, 1)[0][0] <= width:
        return text
    while len(text) > 1 and cv2.getTextSize(text + "..", _FONT, scale, 1)[0][0] > width:
        text = text[:-1]
    return text + ".."


def _header(dataset: Any, width: int, colors: list) -> np.ndarray:
    names = tuple(getattr(dataset, "class_names", ()))
    classes = f"{len(names)} class" + ("" if len(names) == 1 else "es")
    info = [getattr(dataset, "name", type(dataset).__name__), getattr(dataset, "split", None),
            f"{len(dataset)} samples", getattr(dataset, "task", None), classes]
    text = "  |  ".join(str(part) for part in info if part)
    show_legend = 0 < len(names) <= _MAX_LEGEND
    header = np.full((30 + (24 if show_legend else 0), width, 3), _BACKGROUND, np.uint8)
    cv2.putText(header, _fit_text(text, width - 2 * _GAP, 0.5), (_GAP, 20), _FONT, 0.5, _TEXT, 1, cv2.LINE_AA)
    if show_legend:
        x = _GAP
        for k, name in enumerate(names):
            (tw, _), _ = cv2.getTextSize(name, _FONT, 0.42, 1)
            if x + 14 + tw > width - _GAP:
                break
            cv2.rectangle(header, (x, 36), (x + 10, 46), colors[k % len(colors)], cv2.FILLED)
            cv2.putText(header, name, (x + 14, 46), _FONT, 0.42, _MUTED, 1, cv2.LINE_AA)
            x += 14 + tw + 12
    return header


def _square_columns(n: int, tile_w: int, tile_h: int) -> int:
    """Columns that make the sheet roughly square without leaving a ragged last row."""
    ideal = math.sqrt(n * tile_h / tile_w)
    candidates = range(max(1, math.floor(ideal) - 1), math.ceil(ideal) + 2)

    def cost(cols: int) -> float:
        rows = math.ceil(n / cols)
        empty = (rows * cols - n) / n
        return empty + 0.5 * abs(math.log((cols * tile_w) / (rows * tile_h)))

    return min(candidates, key=cost)


def render_preview(dataset: Any, n: int = 16, cols: int | None = None, cell: int = 160) -> np.ndarray:
    """A BGR uint8 contact sheet of the first ``n`` samples of ``dataset``.

    Args:
        dataset: anything following the sample contract (:mod:`edgedet.data.sample`).
        n: number of samples shown (fewer if the dataset is shorter).
        cols: tiles per row; by default the sheet is made roughly square.
        cell: the size, in pixels, each sample's longer side is scaled to (about).
    """
    if cell < 16:
        raise ValueError(f"cell must be >= 16 pixels, got {cell}")
    n = max(0, min(int(n), len(dataset)))
    class_names = tuple(getattr(dataset, "class_names", ()))
    colors = palette(max(len(class_names), 1))
    tiles, titles = [], []
    for i in range(n):
        sample = dataset[i]
        tiles.append(_render_tile(sample, class_names, cell, colors))
        titles.append(_title(sample))
    tile_w = max([t.shape[1] for t in tiles] + [cell])
    tile_h = max([t.shape[0] for t in tiles] + [1]) + _TITLE_H
    if cols is None:
        cols = _square_columns(max(n, 1), tile_w, tile_h)
    cols = max(1, min(int(cols), max(n, 1)))
    rows = max(1, math.ceil(n / cols))
    width = cols * tile_w + (cols + 1) * _GAP
    header = _header(dataset, width, colors)
    grid = np.full((rows * tile_h + (rows + 1) * _GAP, width, 3), _BACKGROUND, np.uint8)
    if n == 0:
        cv2.putText(grid, "no samples", (_GAP, _GAP + 20), _FONT, 0.5, _MUTED, 1, cv2.LINE_AA)
    for i, (tile, title) in enumerate(zip(tiles, titles)):
        x = _GAP + (i % cols) * (tile_w + _GAP)
        y = _GAP + (i // cols) * (tile_h + _GAP)
        grid[y: y + _TITLE_H, x: x + tile_w] = _TITLE_BAR
        cv2.putText(grid, _fit_text(title, tile_w - 8, 0.42), (x + 5, y + 14), _FONT, 0.42, _TEXT, 1,
                    cv2.LINE_AA)
        th, tw = tile.shape[:2]
        # Smaller images sit centred in the cell so the grid stays regular.
        ox = x + (tile_w - tw) // 2
        oy = y + _TITLE_H + (tile_h - _TITLE_H - th) // 2
        grid[oy: oy + th, ox: ox + tw] = tile
    return np.vstack([header, grid])


def preview_dataset(spec: str, out_path: str | os.PathLike, n: int = 16, split: str = "train") -> Path:
    """Render a preview of the dataset ``spec`` and write it to ``out_path`` (.png or .jpg)."""
    out_path = Path(out_path).expanduser()
    if out_path.suffix.lower() not in PREVIEW_SUFFIXES:
        raise DataError(f"preview output {out_path} must end in {', '.join(PREVIEW_SUFFIXES)}")
    sheet = render_preview(build_dataset(spec, split), n=n)
    try:
        with atomic_path(out_path) as tmp:
            if not cv2.imwrite(str(tmp), sheet):
                raise DataError(f"cannot write preview {out_path}")
    except OSError as exc:
        raise DataError(f"cannot write preview {out_path}: {exc.strerror or exc}") from exc
    return out_path
