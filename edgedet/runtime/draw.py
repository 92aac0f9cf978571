"""Drawing detections and segmentation masks onto BGR frames (numpy and OpenCV only).

Colours follow one rule everywhere: object class ``k`` is drawn in ``palette(...)[k]`` and the
semantic value ``k + 1`` (the same class in a segmentation mask, where 0 is background) in the
same colour, so boxes and masks of one class match.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

__all__ = ["palette", "draw_detections", "overlay_mask", "mask_legend", "draw_legend", "draw_label", "label_style",
           "draw_status", "detection_colors", "draw_instance_masks", "instance_legend"]

Color = tuple[int, int, int]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GOLDEN = 0.618033988749895


@lru_cache(maxsize=4096)
def _color(i: int) -> Color:
    # Stepping hue by the golden ratio keeps any prefix of the palette well spread, so the
    # first few classes are always far apart; alternating saturation/value separates
    # neighbours once hues start to repeat.
    hue = (0.02 + i * _GOLDEN) % 1.0
    sat = (0.85, 0.6, 0.95)[i % 3]
    val = (0.95, 1.0, 0.8)[(i // 3) % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(round(b * 255)), int(round(g * 255)), int(round(r * 255))


@lru_cache(maxsize=None)
def _palette(n: int) -> tuple[Color, ...]:
    return tuple(_color(i) for i in range(n))


def palette(n: int) -> list[Color]:
    """``n`` distinct BGR colours, the same list every call (a prefix of ``palette(n + 1)``)."""
    if n < 0:
        raise ValueError(f"palette size must be >= 0, got {n}")
    return list(_palette(n))


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])), cv2.COLOR_GRAY2BGR)
    raise ValueError(f"expected a [H, W, 3] BGR or [H, W] grey image, got shape {image.shape}")


def label_style(image_shape: Sequence[int]) -> tuple[float, int, int]:
    """Font scale, text thickness and box thickness that read well on an image of this size."""
    short = min(int(image_shape[0]), int(image_shape[1]))
    # Hershey glyphs are ~22 px tall at scale 1; aim for text ~4 % of the short side, but never
    # below ~8 px (unreadable) nor above ~26 px (covers the objects).
    scale = float(np.clip(short / 560.0, 0.33, 1.2))
    text_thickness = 1 if scale < 0.8 else 2
    box_thickness = max(1, int(round(short / 320.0)))
    return scale, text_thickness, box_thickness


def _text_color(background: Color) -> Color:
    b, g, r = background
    luma = 0.114 * b + 0.587 * g + 0.299 * r
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


@lru_cache(maxsize=4096)
def _tag(text: str, scale: float, thickness: int, color: Color) -> np.ndarray:
    """The filled tag with ``text`` on it, rendered once per (text, style, colour) and then copied:
    anti-aliased text costs tens of microseconds per call, a copy of the tag a few, and a video
    repeats the same few hundred tags frame after frame. Read-only (shared by every caller)."""
    (tw, th), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = max(1, int(round(th * 0.25)))
    tag = np.empty((th + baseline + pad, tw + 2 * pad, 3), np.uint8)
    tag[:] = color
    cv2.putText(tag, text, (pad, pad + th - 1), _FONT, scale, _text_color(color), thickness, cv2.LINE_AA)
    tag.flags.writeable = False
    return tag


def draw_label(image: np.ndarray, text: str, x: int, y: int, color: Color,
               scale: float | None = None, thickness: int | None = None,
               above: bool = True) -> np.ndarray:
    """Write ``text`` on a filled ``color`` tag anchored at (x, y), kept inside the image.

    With ``above`` the tag sits on top of y (the usual place over a box's top edge) and drops
    below y when there is no room; the text colour is black or white, whichever reads better.
    """
    h, w = image.shape[:2]
    if scale is None or thickness is None:
        auto_scale, auto_thickness, _ = label_style(image.shape)
        scale = auto_scale if scale is None else scale
        thickness = auto_thickness if thickness is None else thickness
    color = tuple(int(c) for c in color)
    tag = _tag(text, float(scale), int(thickness), color)
    tag_h, tag_w = tag.shape[:2]
    # Plain min/max, not np.clip: this runs once per drawn box, on every frame of a video.
    x0 = int(min(max(x, 0), max(0, w - tag_w)))
    y0 = y - tag_h if above and y - tag_h >= 0 else y
    y0 = int(min(max(y0, 0), max(0, h - tag_h)))
    # A tag wider or taller than the image is cut at its right or bottom edge.
    image[y0:y0 + tag_h, x0:x0 + tag_w] = tag[:h - y0, :w - x0]
    return image


def draw_detections(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                    scores: np.ndarray | None = None,
                    class_names: Sequence[str] | None = None,
                    thickness: int | None = None,
                    colors: Sequence[Color] | None = None,
                    font_scale: float | None = None,
                    track_ids: np.ndarray | None = None) -> np.ndarray:
    """Draw boxes with a ``name score`` tag each (``#id name score`` when tracked); returns the drawn image.

    Args:
        image: uint8 [H, W, 3] BGR, drawn in place. A grey [H, W] or [H, W, 1] image is first
            converted to a new BGR image, so always use the returned array.
        boxes: [N, 4] x1, y1, x2, y2 in pixels (x2, y2 exclusive, as in the sample contract).
        labels: [N] class ids; rows with a negative id (padding from a fixed-size graph
            output) are skipped.
        scores: optional [N] confidences, printed with two decimals.
        class_names: names for the ids; without them the id itself is printed.
        thickness: box line width; by default it grows with the image.
        colors: per-class colours; by default :func:`palette`.
        font_scale: OpenCV font scale of the tags; by default it grows with the image.
        track_ids: optional [N] track ids: a tracked box (id >= 0) is drawn in its id's colour
            (``palette`` by id, so an object keeps its colour) with ``#id`` before its name.
    """
    image = _as_bgr(image)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    scale, text_thickness, box_thickness = label_style(image.shape)
    thickness = box_thickness if thickness is None else thickness
    scale = scale if font_scale is None else font_scale

    # Boxes first, then tags, so no box line is drawn across another object's tag. Plain Python
    # numbers in the loops: per-element numpy indexing costs more than the drawing itself.
    corners = np.round(boxes).astype(np.int64).tolist()
    label_ids = labels.tolist()
    visible = [i for i in range(len(boxes)) if label_ids[i] >= 0]
    box_colors = detection_colors(labels, class_names, track_ids, colors)
    ids: list[int] = [-1] * len(boxes)
    if track_ids is not None:
        ids = np.asarray(track_ids, dtype=np.int64).reshape(-1).tolist()
        # Followed objects last, so an unfollowed second box of one never hides its #id tag.
        visible.sort(key=lambda i: ids[i] >= 0)
    for i in visible:
        x1, y1, x2, y2 = corners[i]
        # x2/y2 are exclusive; the outline goes on the last pixel that belongs to the object.
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), box_colors[i], thickness)
    score_list = scores.tolist() if scores is not None else None
    for i in visible:
        label = label_ids[i]
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        text = name if score_list is None else f"{name} {score_list[i]:.2f}"
        if ids[i] >= 0:
            text = f"#{ids[i]} {text}"
        draw_label(image, text, corners[i][0], corners[i][1], box_colors[i], scale, text_thickness)
    return image


def detection_colors(labels: np.ndarray, class_names: Sequence[str] | None = None,
                     track_ids: np.ndarray | None = None,
                     colors: Sequence[Color] | None = None) -> list[Color | None]:
    """The colour of each detection: its class's (``colors``, by default :func:`palette`), or with
    ``track_ids`` its track's (palette colour ``t`` for track id ``t >= 0``, so an object keeps its
    colour); ``None`` for padding rows (negative label)."""
    label_ids = np.asarray(labels).reshape(-1).astype(np.int64).tolist()
    n_classes = max(len(class_names) if class_names else 0, max(label_ids, default=-1) + 1)
    colors = list(colors) if colors is not None else palette(max(n_classes, 1))
    out: list[Color | None] = [colors[label % len(colors)] if label >= 0 else None for label in label_ids]
    if track_ids is not None:
        ids = np.asarray(track_ids, dtype=np.int64).reshape(-1).tolist()
        if len(ids) != len(label_ids):
            raise ValueError(f"{len(label_ids)} boxes but {len(ids)} track ids")
        # Track id t is drawn in palette colour t (palette(t + 1)[t]): an object keeps its colour.
        out = [_color(t) if t >= 0 else c for t, c in zip(ids, out)]
    return out


def draw_instance_masks(image: np.ndarray, masks, labels: np.ndarray,
                        class_names: Sequence[str] | None = None, track_ids: np.ndarray | None = None,
                        alpha: float = 0.45, legend: bool = True) -> np.ndarray:
    """Fill each instance mask translucently and outline it; returns the drawn image.

    ``masks`` is an :class:`~edgedet.runtime.masks.InstanceMasks` of the frame (one per row of
    ``labels``). Each instance is drawn in its box's colour (:func:`detection_colors`: the class's,
    or the track's when tracked), so a mask and its box match. Only each box's region is touched.
    With ``legend`` the top-right corner lists the classes present as ``name xN`` in the class
    colours (with tracking the fills are per track and the legend still keys the classes).
    ``image`` follows :func:`draw_detections`' in-place rule.
    """
    image = _as_bgr(image)
    if image.shape[:2] != tuple(masks.size):
        raise ValueError(f"masks of a {masks.size} frame cannot be drawn on an image of {image.shape[:2]}")
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(labels) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(labels)} labels")
    colors = detection_colors(labels, class_names, track_ids)
    thickness = max(1, label_style(image.shape)[2])
    for i, (crop, (x0, y0)) in enumerate(zip(masks.crops, masks.origins.tolist())):
        if colors[i] is None or not crop.any():
            continue
        region = image[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]]
        # Blend the whole box region with OpenCV, then copy back only the mask's pixels (OpenCV's
        # masked copy into the region): many times faster than numpy arithmetic on masked pixels.
        tint = tuple(alpha * c for c in colors[i]) + (0.0,)
        tinted = cv2.add(cv2.convertScaleAbs(region, alpha=1.0 - alpha), tint)
        copied = cv2.copyTo(tinted, crop.view(np.uint8), region)
        if copied is not region:  # OpenCV made a new array after all
            region[...] = copied
        contours, _ = cv2.findContours(crop.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(x0, y0))
        cv2.drawContours(image, contours, -1, colors[i], thickness, cv2.LINE_AA)
    if legend:
        draw_legend(image, instance_legend(labels, class_names))
    return image


def instance_legend(labels: np.ndarray, class_names: Sequence[str] | None = None) -> list[tuple[str, Color]]:
    """The legend of :func:`draw_instance_masks`: ``("name xN", class colour)`` per class present."""
    present = [int(v) for v in np.asarray(labels).reshape(-1).tolist() if v >= 0]
    class_colors = detection_colors(np.arange(max(present, default=-1) + 1), class_names)
    entries = []
    for label in sorted(set(present)):
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        entries.append((f"{name} x{present.count(label)}", class_colors[label]))
    return entries  # type: ignore[return-value]


def overlay_mask(image: np.ndarray, semantic: np.ndarray, alpha: float = 0.45,
                 ignore: int = 255, colors: Sequence[Color] | None = None) -> np.ndarray:
    """Blend a semantic mask over ``image``; returns the drawn image.

    ``semantic`` is uint8 [H, W]: 0 is background and stays transparent, ``ignore`` stays
    transparent too, and value ``k`` is drawn in ``colors[k - 1]`` (the colour of object class
    ``k - 1`` in :func:`draw_detections`). ``image`` follows the same in-place rule as there.
    """
    image = _as_bgr(image)
    semantic = np.asarray(semantic)
    if semantic.shape != image.shape[:2]:
        raise ValueError(f"mask shape {semantic.shape} does not match image {image.shape[:2]}")
    drawn = (semantic != 0) & (semantic != ignore)
    if drawn.any():
        values = semantic[drawn].astype(np.int64)
        if values.min() < 0:
            raise ValueError("semantic mask holds negative class ids")
        colors = list(colors) if colors is not None else palette(int(values.max()))
        lut = np.array([(0, 0, 0)] + [colors[(v - 1) % len(colors)] for v in range(1, int(values.max()) + 1)],
                       dtype=np.float32)
        pixels = image[drawn].astype(np.float32)
        tint = lut[values]
        image[drawn] = np.clip(pixels * (1.0 - alpha) + tint * alpha + 0.5, 0, 255).astype(np.uint8)
    return image


def draw_legend(image: np.ndarray, entries: Sequence[tuple[str, Color]]) -> np.ndarray:
    """List ``(name, colour)`` entries as coloured tags down the top-right corner (the key of a
    segmentation overlay: one tag per class present in the mask)."""
    scale, thickness, _ = label_style(image.shape)
    y = 0
    for name, color in entries:
        (tw, th), baseline = cv2.getTextSize(name, _FONT, scale, thickness)
        draw_label(image, name, image.shape[1] - tw - 2 * max(1, round(th * 0.25)), y, color, scale, thickness,
                   above=False)
        y += th + baseline + max(1, int(round(th * 0.25))) + 1
    return image


def mask_legend(semantic: np.ndarray, class_names: Sequence[str], ignore: int = 255) -> list[tuple[str, Color]]:
    """The legend of :func:`overlay_mask`'s colours for the classes present in ``semantic``
    (background and ``ignore`` are not drawn, so they have no entry)."""
    values = sorted(int(v) for v in np.unique(semantic) if v != 0 and v != ignore)
    if not values:
        return []
    colors = palette(values[-1])
    return [(class_names[v] if v < len(class_names) else str(v), colors[v - 1]) for v in values]


def draw_status(image: np.ndarray, text: str) -> np.ndarray:
    """Write a status line (e.g. ``"31.2 FPS"``) in the top-left corner, white on dark grey."""
    scale, thickness, _ = label_style(image.shape)
    return draw_label(image, text, 0, 0, (40, 40, 40), scale, thickness, above=False)
