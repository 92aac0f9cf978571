"""Synthetic digit datasets of the course seeds, generated per index with no files and no network.

- :class:`DigitsLocalization` (``digits-loc``, seed 1's localization task): 48x60 grey images
  holding zero or one handwritten digit 0-9 over background clutter (blotches, stray strokes,
  uneven lighting and noise).
- :class:`DigitsGrid` (``digits-grid``, seed 1's detection task): 48x60 grey images cut into a
  2-row x 3-column grid of 24x20 cells; each cell holds at most one digit 0 or 1, and the centre
  of that digit's box lies in the cell.
- :class:`Clutter` (``clutter``, seed 2's MNIST Clutter): colour canvases with 1..max_digits
  digits, each with its own colour, rotation, shear, scale and position, over a mildly cluttered
  background; instance masks come from the drawn glyph's alpha, so they are modal (what is
  visible): where digits overlap the one drawn later wins, and an instance left with fewer than
  20 visible pixels (or under a quarter of itself) is dropped. Its few visible pixels are left
  as background in ``semantic``.
- :class:`DigitsScene` (``digits-scene``): 240x320 grey canvases with several ``digits-loc``-style
  digits over ``digits-loc``-style clutter, the scenes of the fully convolutional localizer.

Each sample is drawn from ``np.random.default_rng([seed, stream, split, index])``, so an index
gives the same sample in every process and the train and val splits are disjoint streams. The
glyphs come from :mod:`edgedet.data.glyphs` (MNIST when on disk unless ``glyphs=builtin``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from edgedet.data.glyphs import GlyphBank, glyph_bank, resolve_glyph_source
from edgedet.data.sample import SampleDataset, check_split, empty_targets, tight_boxes
from edgedet.errors import DataError

__all__ = ["DigitsLocalization", "DigitsGrid", "Clutter", "DigitsScene", "DIGIT_NAMES"]

DIGIT_NAMES = tuple(str(d) for d in range(10))
_SPLIT_CODES = {"train": 0, "val": 1}
# Stream ids keep two datasets built with the same seed from sharing random draws.
_STREAMS = {"digits-loc": 101, "digits-grid": 102, "clutter": 103, "digits-scene": 104}
_DEFAULT_LENGTH = {"train": 10000, "val": 2000}
# Alpha (0..1) from which a glyph pixel counts as part of the digit's mask and box.
_MASK_ALPHA = 0.4
_MIN_VISIBLE_PIXELS = 20
_MIN_VISIBLE_FRACTION = 0.25
_NOISE_TILE = 256


@lru_cache(maxsize=1)
def _noise_tile() -> np.ndarray:
    # Drawing fresh Gaussian noise costs more than the rest of a small sample; a fixed tile read
    # at a random offset and flip is just as good for training and keeps samples fast.
    return np.random.default_rng(7).standard_normal((_NOISE_TILE, _NOISE_TILE)).astype(np.float32)


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    tile = _noise_tile()
    if h > _NOISE_TILE or w > _NOISE_TILE:
        reps = (-(-h // _NOISE_TILE), -(-w // _NOISE_TILE))
        tile = np.tile(tile, reps)
    y = int(rng.integers(tile.shape[0] - h + 1))
    x = int(rng.integers(tile.shape[1] - w + 1))
    patch = tile[y: y + h, x: x + w]
    return patch[::-1] if rng.random() < 0.5 else patch


def _smooth_field(rng: np.random.Generator, h: int, w: int, sigma: float, channels: int = 1) -> np.ndarray:
    """Low-frequency random shading: a coarse random grid upsampled to (h, w)."""
    coarse = rng.normal(0.0, sigma, size=(3, 4, channels)).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return field.reshape(h, w, channels)


def _warp_glyph(glyph: np.ndarray, rng: np.random.Generator, ink_height: float,
                max_rotation: float, max_shear: float) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Scale, rotate and shear a glyph into a small sprite.

    Returns the sprite's alpha (float32 [h, w], 0..1) cropped to the digit plus a 1-pixel soft
    margin, and the tight box (x1, y1, x2, y2) of its mask (alpha >= _MASK_ALPHA) inside it.
    """
    x, y, w, h = cv2.boundingRect((glyph >= 64).astype(np.uint8))
    if w == 0 or h == 0:
        return None
    scale = ink_height / h
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation))
    shear = rng.uniform(-max_shear, max_shear)
    aspect = rng.uniform(0.85, 1.15)
    cos, sin = np.cos(angle), np.sin(angle)
    # Forward map glyph -> sprite: centre the ink, squeeze, shear, rotate, scale, recentre.
    linear = scale * np.array([[cos, -sin], [sin, cos]]) @ np.array([[aspect, shear], [0.0, 1.0]])
    side = int(np.ceil(max(w, h) * scale * 1.8)) + 4
    centre = np.array([x + w / 2.0, y + h / 2.0])
    offset = np.array([side / 2.0, side / 2.0]) - linear @ centre
    matrix = np.hstack([linear, offset[:, None]]).astype(np.float32)
    warped = cv2.warpAffine(glyph, matrix, (side, side), flags=cv2.INTER_LINEAR, borderValue=0)
    mask = (warped >= int(round(_MASK_ALPHA * 255))).astype(np.uint8)
    bx, by, bw, bh = cv2.boundingRect(mask)
    if bw == 0 or bh == 0:
        return None
    x0, y0 = max(bx - 1, 0), max(by - 1, 0)
    x1, y1 = min(bx + bw + 1, side), min(by + bh + 1, side)
    alpha = warped[y0:y1, x0:x1].astype(np.float32) * np.float32(1.0 / 255.0)
    return alpha, (bx - x0, by - y0, bx - x0 + bw, by - y0 + bh)


def _paste(canvas: np.ndarray, alpha: np.ndarray, x: int, y: int,
           ink: np.ndarray | float) -> tuple[slice, slice, np.ndarray]:
    """Alpha-blend ``ink`` through ``alpha`` placed with its top-left at (x, y), clipped to the canvas.

    Returns the canvas slices and the part of ``alpha`` that landed on the canvas.
    """
    h, w = canvas.shape[:2]
    ah, aw = alpha.shape
    cx0, cy0 = max(x, 0), max(y, 0)
    cx1, cy1 = min(x + aw, w), min(y + ah, h)
    part = alpha[cy0 - y: cy1 - y, cx0 - x: cx1 - x]
    rows, cols = slice(cy0, cy1), slice(cx0, cx1)
    region = canvas[rows, cols]
    a = part[..., None] if region.ndim == 3 else part
    canvas[rows, cols] = region + (ink - region) * a
    return rows, cols, part


def _grey_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Grey clutter: uneven lighting, soft blotches and a few stray strokes, float32 [h, w]."""
    canvas = np.full((h, w), rng.uniform(25.0, 105.0), np.float32)
    canvas += _smooth_field(rng, h, w, 14.0)[..., 0]
    blotches = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(2, 7))):
        centre = (int(rng.integers(w)), int(rng.integers(h)))
        axes = (int(rng.integers(2, 12)), int(rng.integers(2, 12)))
        cv2.ellipse(blotches, centre, axes, float(rng.uniform(0, 180)), 0, 360,
                    float(rng.uniform(-45.0, 60.0)), cv2.FILLED)
    canvas += cv2.GaussianBlur(blotches, (5, 5), 1.5)
    # Strokes as bright as faint digits make "any bright blob" a losing strategy for the model.
    for _ in range(int(rng.integers(0, 4))):
        points = np.stack([rng.uniform(0, w, 3), rng.uniform(0, h, 3)], axis=1).astype(np.int32)
        cv2.polylines(canvas, [points], False, float(rng.uniform(70.0, 160.0)),
                      int(rng.integers(1, 3)), cv2.LINE_AA)
    return canvas


def _colour_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Colour clutter: a dim tinted gradient with translucent shapes, float32 [h, w, 3] BGR."""
    hsv = np.uint8([[[rng.integers(180), rng.integers(20, 110), rng.integers(35, 110)]]])
    base = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
    canvas = base + _smooth_field(rng, h, w, 16.0, channels=3)
    shapes = canvas.copy()
    scale = min(h, w)
    for _ in range(int(rng.integers(3, 10))):
        colour = tuple(float(c) for c in rng.uniform(30.0, 160.0, 3))
        kind = rng.integers(4)
        p = (int(rng.integers(w)), int(rng.integers(h)))
        size = int(rng.integers(scale // 20 + 2, scale // 5 + 3))
        if kind == 0:
            q = (int(rng.integers(w)), int(rng.integers(h)))
            cv2.line(shapes, p, q, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(shapes, p, size, colour, int(rng.choice([-1, 1, 2])), cv2.LINE_AA)
        elif kind == 2:
            cv2.rectangle(shapes, p, (p[0] + size, p[1] + int(rng.integers(2, size + 3))), colour, -1)
        else:
            start = float(rng.uniform(0, 360))
            cv2.ellipse(shapes, p, (size, max(2, size // 2)), float(rng.uniform(0, 180)), start,
                        start + float(rng.uniform(60, 270)), colour, 2, cv2.LINE_AA)
    opacity = np.float32(rng.uniform(0.35, 0.65))
    return canvas + (shapes - canvas) * opacity


def _finish(canvas: np.ndarray, rng: np.random.Generator, noise_level: float) -> np.ndarray:
    """Add sensor-like noise to a float canvas and quantise it to uint8 [H, W, C]."""
    h, w = canvas.shape[:2]
    if canvas.ndim == 2:
        canvas = canvas + _noise(rng, h, w) * np.float32(noise_level)
        canvas = canvas[..., None]
    else:
        for c in range(canvas.shape[2]):
            canvas[..., c] += _noise(rng, h, w) * np.float32(noise_level)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


class _SyntheticDigits(SampleDataset):
    """Shared parts of the digit sets: length, seeding, lazily loaded glyphs."""

    stream = ""

    def __init__(self, split: str = "train", n: int | None = None, seed: int = 0,
                 glyphs: str = "auto") -> None:
        self.split = check_split(split)
        self.n = _DEFAULT_LENGTH[split] if n is None else int(n)
        if self.n < 0:
            raise DataError(f"{self.name}: n must be >= 0, got {self.n}")
        if int(seed) < 0:
            raise DataError(f"{self.name}: seed must be >= 0, got {seed}")
        self.seed = int(seed)
        self.glyphs = resolve_glyph_source(glyphs)
        self._bank: GlyphBank | None = None

    @property
    def bank(self) -> GlyphBank:
        if self._bank is None:
            self._bank = glyph_bank(self.glyphs, self.split)
        return self._bank

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes rebuild the bank from their own cache instead of receiving ~50 MB.
        state = self.__dict__.copy()
        state["_bank"] = None
        return state

    def __len__(self) -> int:
        return self.n

    def rng(self, index: int) -> np.random.Generator:
        """The generator sample ``index`` is drawn from."""
        return np.random.default_rng([self.seed, _STREAMS[self.stream], _SPLIT_CODES[self.split], index])


class DigitsLocalization(_SyntheticDigits):
    """48x60 grey images with zero or one digit 0-9 (``empty``: the chance of none).

    Args:
        split: 'train' or 'val'.
        n: number of samples (default 10000 for train, 2000 for val).
        seed: dataset seed; with split and index it fixes every sample.
        glyphs: 'auto' (MNIST if on disk), 'mnist' or 'builtin'.
        empty: probability that an image holds no digit.
    """

    name = stream = "digits-loc"
    class_names = DIGIT_NAMES
    task = "localization"
    image_size = (48, 60)

    def __init__(self, split: str = "train", n: int | None = None, seed: int = 0,
                 glyphs: str = "auto", empty: float = 0.25) -> None:
        super().__init__(split, n, seed, glyphs)
        if not 0.0 <= empty <= 1.0:
            raise DataError(f"{self.name}: empty must be in [0, 1], got {empty}")
        self.empty = float(empty)

    def _sample(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        h, w = self.image_size
        canvas = _grey_background(rng, h, w)
        targets = empty_targets()
        if rng.random() >= self.empty:
            digit = int(rng.integers(10))
            sprite = _warp_glyph(self.bank.pick(rng, digit), rng, rng.uniform(14.0, 36.0), 18.0, 0.25)
            if sprite is not None:
                alpha, (bx1, by1, bx2, by2) = sprite
                # Anywhere the whole box stays inside the image (digit sizes are chosen to fit).
                x = int(rng.integers(-bx1, max(w - bx2, -bx1) + 1))
                y = int(rng.integers(-by1, max(h - by2, -by1) + 1))
                _paste(canvas, alpha, x, y, np.float32(rng.uniform(165.0, 255.0)))
                box = np.array([[x + bx1, y + by1, x + bx2, y + by2]], np.float32)
                np.clip(box, 0, [w, h, w, h], out=box)
                targets = {"boxes": box, "labels": np.array([digit], np.int64)}
        image = _finish(canvas, rng, rng.uniform(3.0, 10.0))
        return {"image": image, **targets, "id": index}


def _place_in_cell(rng: np.random.Generator, start: int, cell: int, extent: int, limit: int) -> int | None:
    """A box start (left or top) along one axis such that the box centre lies in the cell
    [start, start + cell) and the box stays inside [0, limit); None if there is none.

    Starts that keep the box within 3 pixels of the cell are preferred, so neighbouring digits
    rarely overlap; a box too large for that only needs its centre in the cell.
    """
    # centre = first + extent / 2 must satisfy start <= centre < start + cell
    lo = max(int(np.ceil(start - extent / 2.0)), 0)
    hi = min(int(np.ceil(start + cell - extent / 2.0)) - 1, limit - extent)
    if hi < lo:
        return None
    snug_lo, snug_hi = max(lo, start - 3), min(hi, start + cell + 3 - extent)
    if snug_lo <= snug_hi:
        lo, hi = snug_lo, snug_hi
    return int(rng.integers(lo, hi + 1))


class DigitsGrid(_SyntheticDigits):
    """48x60 grey images, a 2x3 grid of 24x20 cells, at most one digit 0 or 1 per cell.

    A digit belongs to the cell holding its box centre ``((x1 + x2) / 2, (y1 + y2) / 2)``; the
    digit itself may reach into neighbouring cells. ``fill`` is the chance a cell is occupied;
    other arguments as in :class:`DigitsLocalization`.
    """

    name = stream = "digits-grid"
    class_names = ("0", "1")
    task = "detection"
    image_size = (48, 60)
    grid = (2, 3)
    cell_size = (24, 20)

    def __init__(self, split: str = "train", n: int | None = None, seed: int = 0,
                 glyphs: str = "auto", fill: float = 0.5) -> None:
        super().__init__(split, n, seed, glyphs)
        if not 0.0 <= fill <= 1.0:
            raise DataError(f"{self.name}: fill must be in [0, 1], got {fill}")
        self.fill = float(fill)

    def _sample(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        h, w = self.image_size
        cell_h, cell_w = self.cell_size
        canvas = _grey_background(rng, h, w)
        boxes, labels = [], []
        for row in range(self.grid[0]):
            for col in range(self.grid[1]):
                if rng.random() >= self.fill:
                    continue
                digit = int(rng.integers(2))
                sprite = _warp_glyph(self.bank.pick(rng, digit), rng, rng.uniform(12.0, 22.0), 15.0, 0.2)
                if sprite is None:
                    continue
                alpha, (bx1, by1, bx2, by2) = sprite
                bw, bh = bx2 - bx1, by2 - by1
                left = _place_in_cell(rng, col * cell_w, cell_w, bw, w)
                top = _place_in_cell(rng, row * cell_h, cell_h, bh, h)
                if left is None or top is None:
                    continue
                _paste(canvas, alpha, left - bx1, top - by1, np.float32(rng.uniform(165.0, 255.0)))
                boxes.append([left, top, left + bw, top + bh])
                labels.append(digit)
        image = _finish(canvas, rng, rng.uniform(3.0, 10.0))
        return {"image": image, "boxes": np.array(boxes, np.float32).reshape(-1, 4),
                "labels": np.array(labels, np.int64), "id": index}

    def cell_of(self, box: np.ndarray) -> tuple[int, int]:
        """(row, col) of the cell holding a box's centre."""
        cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
        return int(cy // self.cell_size[0]), int(cx // self.cell_size[1])


class Clutter(_SyntheticDigits):
    """MNIST Clutter: BGR canvases with 1..max_digits coloured, transformed digits and their masks.

    Args:
        size: canvas side, or (H, W); default 128.
        max_digits: most digits drawn per image (some may be dropped as hidden).
        others: as in :class:`DigitsLocalization`.
    """

    name = stream = "clutter"
    class_names = DIGIT_NAMES
    task = "segmentation"
    has_masks = True

    def __init__(self, split: str = "train", n: int | None = None, seed: int = 0,
                 glyphs: str = "auto", size: int | tuple[int, int] = 128, max_digits: int = 5) -> None:
        super().__init__(split, n, seed, glyphs)
        h, w = (size, size) if np.isscalar(size) else tuple(size)
        if min(h, w) < 32 or max(h, w) > 4096:
            raise DataError(f"{self.name}: size must be between 32 and 4096 pixels, got {h}x{w}")
        if max_digits < 1:
            raise DataError(f"{self.name}: max_digits must be >= 1, got {max_digits}")
        self.image_size = (int(h), int(w))
        self.max_digits = int(max_digits)

    def _sample(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        h, w = self.image_size
        short = min(h, w)
        canvas = _colour_background(rng, h, w)
        owner = np.full((h, w), -1, np.int16)
        drawn_boxes: list[tuple[int, int, int, int]] = []
        labels, full_areas = [], []
        for _ in range(int(rng.integers(1, self.max_digits + 1))):
            digit = int(rng.integers(10))
            ink_height = rng.uniform(0.15, 0.4) * short
            sprite = _warp_glyph(self.bank.pick(rng, digit), rng, ink_height, 35.0, 0.3)
            if sprite is None:
                continue
            alpha, (bx1, by1, bx2, by2) = sprite
            bw, bh = min(bx2 - bx1, w), min(by2 - by1, h)
            # A few tries for a spot that hides little of the digits already drawn; heavy
            # occlusion is allowed, only made rarer.
            for _attempt in range(8):
                left = int(rng.integers(0, w - bw + 1))
                top = int(rng.integers(0, h - bh + 1))
                if all(_overlap(left, top, left + bw, top + bh, box) < 0.35 for box in drawn_boxes):
                    break
            hsv = np.uint8([[[rng.integers(180), rng.integers(140, 256), rng.integers(190, 256)]]])
            colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
            rows, cols, part = _paste(canvas, alpha, left - bx1, top - by1, colour)
            region = owner[rows, cols]
            region[part >= _MASK_ALPHA] = len(labels)
            full_areas.append(int((part >= _MASK_ALPHA).sum()))
            drawn_boxes.append((left, top, left + bw, top + bh))
            labels.append(digit)
        image = _finish(canvas, rng, rng.uniform(2.0, 7.0))

        masks = (owner[None] == np.arange(len(labels), dtype=np.int16)[:, None, None])
        visible = masks.reshape(len(labels), -1).sum(axis=1)
        keep = [i for i in range(len(labels))
                if visible[i] >= max(_MIN_VISIBLE_PIXELS, _MIN_VISIBLE_FRACTION * full_areas[i])]
        masks = masks[keep].astype(np.uint8)
        labels_kept = np.array([labels[i] for i in keep], np.int64)
        semantic = np.zeros((h, w), np.uint8)
        for mask, label in zip(masks, labels_kept):
            semantic[mask.astype(bool)] = label + 1
        return {"image": image, "boxes": tight_boxes(masks), "labels": labels_kept, "masks": masks,
                "semantic": semantic, "id": index}


class DigitsScene(_SyntheticDigits):
    """Grey scenes of several digits over clutter, for the fully convolutional localizer.

    Each digit is drawn as ``digits-loc`` draws its one digit (same glyph warp, ink height 14-36
    pixels, ink brightness and noise), so a 48x60 window around a digit looks like a
    ``digits-loc`` sample. The background is the ``digits-loc`` clutter at scene scale: a base
    level with smooth shading, and blotches and stray strokes at the density of one 48x60 image
    per 48x60 of canvas. ``min_digits..max_digits`` digits are placed at random spots inside the
    canvas, each a few tries away from the boxes already drawn (at most 10% of the smaller box
    may overlap), so digits rarely overlap; a digit with no free spot is skipped.

    Args:
        size: canvas side, or (H, W); default 240x320; at least 48x60 (one localizer window).
        max_digits: most digits per image (default 8). min_digits: fewest tried (default 2).
        others: as in :class:`DigitsLocalization`.
    """

    name = stream = "digits-scene"
    class_names = DIGIT_NAMES
    task = "detection"
    window = (48, 60)

    def __init__(self, split: str = "train", n: int | None = None, seed: int = 0, glyphs: str = "auto",
                 size: int | tuple[int, int] = (240, 320), max_digits: int = 8, min_digits: int = 2) -> None:
        super().__init__(split, n, seed, glyphs)
        h, w = (size, size) if np.isscalar(size) else tuple(size)
        if h < self.window[0] or w < self.window[1] or max(h, w) > 4096:
            raise DataError(f"{self.name}: size must be at least {self.window[0]}x{self.window[1]} "
                            f"and at most 4096, got {h}x{w}")
        if not 0 <= min_digits <= max_digits or max_digits < 1:
            raise DataError(f"{self.name}: need 0 <= min_digits <= max_digits and max_digits >= 1, "
                            f"got {min_digits}, {max_digits}")
        self.image_size = (int(h), int(w))
        self.max_digits, self.min_digits = int(max_digits), int(min_digits)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.image_size
        wh, ww = self.window
        tiles = max(1, round(h * w / (wh * ww)))
        canvas = np.full((h, w), rng.uniform(25.0, 105.0), np.float32)
        canvas += _smooth_field(rng, h, w, 14.0)[..., 0]
        blotches = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(2 * tiles, 7 * tiles))):
            centre = (int(rng.integers(w)), int(rng.integers(h)))
            axes = (int(rng.integers(2, 12)), int(rng.integers(2, 12)))
            cv2.ellipse(blotches, centre, axes, float(rng.uniform(0, 180)), 0, 360,
                        float(rng.uniform(-45.0, 60.0)), cv2.FILLED)
        canvas += cv2.GaussianBlur(blotches, (5, 5), 1.5)
        for _ in range(int(rng.integers(0, 4 * tiles))):  # strokes spanning about one window each
            x0, y0 = rng.uniform(-ww / 2, w - ww / 2), rng.uniform(-wh / 2, h - wh / 2)
            points = np.stack([x0 + rng.uniform(0, ww, 3), y0 + rng.uniform(0, wh, 3)], axis=1).astype(np.int32)
            cv2.polylines(canvas, [points], False, float(rng.uniform(70.0, 160.0)),
                          int(rng.integers(1, 3)), cv2.LINE_AA)
        return canvas

    def _sample(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        h, w = self.image_size
        canvas = self._background(rng)
        boxes: list[tuple[int, int, int, int]] = []
        labels: list[int] = []
        for _ in range(int(rng.integers(self.min_digits, self.max_digits + 1))):
            digit = int(rng.integers(10))
            sprite = _warp_glyph(self.bank.pick(rng, digit), rng, rng.uniform(14.0, 36.0), 18.0, 0.25)
            if sprite is None:
                continue
            alpha, (bx1, by1, bx2, by2) = sprite
            bw, bh = bx2 - bx1, by2 - by1
            if bw > w or bh > h:
                continue
            for _attempt in range(10):
                left, top = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
                spot = (left, top, left + bw, top + bh)
                if all(_overlap(*spot, box) <= 0.1 for box in boxes):
                    break
            else:
                continue
            _paste(canvas, alpha, left - bx1, top - by1, np.float32(rng.uniform(165.0, 255.0)))
            boxes.append(spot)
            labels.append(digit)
        image = _finish(canvas, rng, rng.uniform(3.0, 10.0))
        return {"image": image, "boxes": np.array(boxes, np.float32).reshape(-1, 4),
                "labels": np.array(labels, np.int64), "id": index}


def _overlap(x1: int, y1: int, x2: int, y2: int, other: tuple[int, int, int, int]) -> float:
    """Intersection of two boxes over the area of the smaller one."""
    iw = min(x2, other[2]) - max(x1, other[0])
    ih = min(y2, other[3]) - max(y1, other[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    smaller = min((x2 - x1) * (y2 - y1), (other[2] - other[0]) * (other[3] - other[1]))
    return inter / max(smaller, 1)
