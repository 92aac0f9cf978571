"""Digit glyphs for the synthetic datasets: real MNIST when it is on disk, else built-in digits.

Both sources give a :class:`GlyphBank` of 28x28 uint8 glyphs (ink 255 on 0, the digit centred
the way MNIST centres it). MNIST is read straight from torchvision's folder layout
``ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; ROOT is
``$EDGEDET_MNIST_ROOT`` or ``~/.cache/edgedet/mnist`` and :func:`download_mnist` fills it.
Without it, the built-in bank draws each digit with one of OpenCV's Hershey fonts and then
roughens it (stroke width, an elastic wobble, rotation, shear, blur) so it reads as
handwriting rather than type. Banks are built once per process and per split: the val split
gets glyphs the train split never sees (MNIST's test set, or another rendering seed).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from edgedet.errors import DataError

__all__ = [
    "GLYPH_SIZE", "GLYPH_SOURCES", "GlyphBank", "mnist_root", "mnist_available", "read_idx",
    "load_mnist", "render_builtin_glyphs", "glyph_bank", "resolve_glyph_source", "download_mnist",
]

GLYPH_SIZE = 28
GLYPH_SOURCES = ("auto", "mnist", "builtin")
_MNIST_PARTS = {"train": "train", "val": "t10k"}
_BUILTIN_PER_DIGIT = 200
_BUILTIN_SEEDS = {"train": 1801, "val": 9277}


@dataclass(frozen=True)
class GlyphBank:
    """Digit glyphs: ``images`` uint8 [N, 28, 28] (ink 255 on 0) and ``labels`` int64 [N]."""

    images: np.ndarray
    labels: np.ndarray
    source: str
    by_digit: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        groups = tuple(np.flatnonzero(self.labels == d) for d in range(10))
        object.__setattr__(self, "by_digit", groups)

    def __len__(self) -> int:
        return len(self.labels)

    def pick(self, rng: np.random.Generator, digit: int) -> np.ndarray:
        """A random glyph of ``digit``."""
        group = self.by_digit[digit]
        return self.images[group[rng.integers(len(group))]]


def mnist_root() -> Path:
    """Where MNIST is looked for: ``$EDGEDET_MNIST_ROOT`` or ``~/.cache/edgedet/mnist``."""
    root = os.environ.get("EDGEDET_MNIST_ROOT")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "edgedet" / "mnist"


def _mnist_file(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        path = root / "MNIST" / "raw" / name
        if path.is_file():
            return path
    return None


def mnist_available(root: str | os.PathLike | None = None) -> bool:
    """True when the MNIST training images and labels are under ``root`` (default :func:`mnist_root`)."""
    root = Path(root) if root is not None else mnist_root()
    return all(_mnist_file(root, f"train-{kind}") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST container: big-endian dims, then uint8 data), gzipped or not."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, file has {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@lru_cache(maxsize=4)
def _load_mnist_cached(root: str, part: str) -> GlyphBank:
    root_path = Path(root)
    image_file = _mnist_file(root_path, f"{part}-images-idx3-ubyte")
    label_file = _mnist_file(root_path, f"{part}-labels-idx1-ubyte")
    if image_file is None or label_file is None:
        raise DataError(f"MNIST {part} files not found under {root_path / 'MNIST' / 'raw'}; "
                        "run edgedet.data.download_mnist() or use glyphs=builtin")
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.shape[1:] != (GLYPH_SIZE, GLYPH_SIZE):
        raise DataError(f"{image_file} holds {images.shape} images, expected [N, 28, 28]")
    if labels.shape != images.shape[:1] or labels.max(initial=0) > 9:
        raise DataError(f"{label_file} does not match {image_file} (labels {labels.shape})")
    return GlyphBank(images, labels.astype(np.int64), "mnist")


def load_mnist(root: str | os.PathLike | None = None, split: str = "train") -> GlyphBank:
    """MNIST glyphs of ``split``: the training set for 'train', the test set for 'val'.

    The val split falls back to the training set when only that is on disk.
    """
    root = Path(root) if root is not None else mnist_root()
    part = _MNIST_PARTS[split]
    if part != "train" and _mnist_file(root, f"{part}-images-idx3-ubyte") is None:
        part = "train"
    return _load_mnist_cached(str(root.resolve()), part)


_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)
_CANVAS = 64


@lru_cache(maxsize=1)
def _centred_grid() -> tuple[np.ndarray, np.ndarray]:
    coords = np.arange(_CANVAS, dtype=np.float32) - np.float32(_CANVAS / 2.0)
    ox, oy = np.meshgrid(coords, coords)
    return ox, oy


def _render_glyph(digit: int, rng: np.random.Generator) -> np.ndarray:
    """One handwriting-like 28x28 glyph of ``digit``."""
    # Hershey zeros carry a slash in some fonts; a capital O is the plain oval people write.
    text = "O" if digit == 0 else str(digit)
    font = _FONTS[rng.integers(len(_FONTS))]
    if rng.random() < 0.3:
        font |= cv2.FONT_ITALIC
    thickness = int(rng.integers(3, 8))
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, thickness)
    scale = 38.0 / max(th, 1)
    tw, th = int(tw * scale), int(th * scale)
    canvas = np.zeros((_CANVAS, _CANVAS), np.uint8)
    origin = ((_CANVAS - tw) // 2, (_CANVAS + th) // 2)
    cv2.putText(canvas, text, origin, font, scale, 255, thickness, cv2.LINE_AA)

    # A smooth random displacement field bends the strokes the way a hand does; typeset digits
    # are too regular for a detector trained on them to cope with real handwriting.
    coarse = rng.normal(0.0, rng.uniform(1.3, 3.3), size=(4, 4, 2)).astype(np.float32)
    wobble = cv2.resize(coarse, (_CANVAS, _CANVAS), interpolation=cv2.INTER_CUBIC)
    angle = np.deg2rad(rng.uniform(-12.0, 12.0))
    shear = rng.uniform(-0.3, 0.3)
    squeeze = rng.uniform(0.75, 1.1)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    # Inverse map (output pixel -> source pixel): rotate, shear and squeeze about the centre.
    ox, oy = _centred_grid()
    turned_x = cos * ox + sin * oy
    turned_y = cos * oy - sin * ox
    c = np.float32(_CANVAS / 2.0)
    map_x = turned_x * np.float32(1.0 / squeeze) + np.float32(shear) * turned_y + c + wobble[..., 0]
    map_y = turned_y + c + wobble[..., 1]
    canvas = cv2.remap(canvas, map_x, map_y, cv2.INTER_LINEAR, borderValue=0)

    x, y, w, h = cv2.boundingRect((canvas > 40).astype(np.uint8))
    if w == 0 or h == 0:
        return np.zeros((GLYPH_SIZE, GLYPH_SIZE), np.uint8)
    crop = canvas[y: y + h, x: x + w]
    # MNIST fits each digit into a 20x20 box, then centres its centre of mass in 28x28.
    fit = 20.0 / max(h, w)
    size = (max(1, int(round(w * fit))), max(1, int(round(h * fit))))
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    small = cv2.GaussianBlur(small, (3, 3), rng.uniform(0.3, 0.8))
    moments = cv2.moments(small)
    cx = moments["m10"] / max(moments["m00"], 1e-6)
    cy = moments["m01"] / max(moments["m00"], 1e-6)
    shift = np.float32([[1, 0, GLYPH_SIZE / 2 - cx], [0, 1, GLYPH_SIZE / 2 - cy]])
    glyph = cv2.warpAffine(small, shift, (GLYPH_SIZE, GLYPH_SIZE), flags=cv2.INTER_LINEAR)
    peak = max(float(glyph.max()), 1.0)
    return np.clip(glyph * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)


def render_builtin_glyphs(per_digit: int = _BUILTIN_PER_DIGIT, seed: int = 0) -> GlyphBank:
    """Render ``per_digit`` varied glyphs of each digit 0-9 (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((10 * per_digit, GLYPH_SIZE, GLYPH_SIZE), np.uint8)
    labels = np.repeat(np.arange(10, dtype=np.int64), per_digit)
    for i, digit in enumerate(labels):
        images[i] = _render_glyph(int(digit), rng)
    return GlyphBank(images, labels, "builtin")


@lru_cache(maxsize=4)
def _builtin_bank(split: str) -> GlyphBank:
    return render_builtin_glyphs(_BUILTIN_PER_DIGIT, _BUILTIN_SEEDS[split])


def resolve_glyph_source(source: str) -> str:
    """Turn 'auto' into 'mnist' (when on disk) or 'builtin'; reject unknown sources."""
    if source not in GLYPH_SOURCES:
        raise DataError(f"unknown glyph source {source!r}; expected one of {', '.join(GLYPH_SOURCES)}")
    if source == "auto":
        return "mnist" if mnist_available() else "builtin"
    if source == "mnist" and not mnist_available():
        raise DataError(f"glyphs=mnist but MNIST is not under {mnist_root() / 'MNIST' / 'raw'}; "
                        "set EDGEDET_MNIST_ROOT, run edgedet.data.download_mnist(), or use glyphs=builtin")
    return source


def glyph_bank(source: str, split: str) -> GlyphBank:
    """The (per-process cached) glyph bank of a resolved source ('mnist' or 'builtin') and split."""
    if source == "mnist":
        return load_mnist(split=split)
    if source == "builtin":
        return _builtin_bank(split)
    raise DataError(f"unknown glyph source {source!r}")


def download_mnist(root: str | os.PathLike | None = None) -> Path:
    """Download MNIST into ``root`` (default :func:`mnist_root`) with torchvision; returns root.

    torchvision checks each file's md5. Nothing in edgedet calls this on its own.
    """
    root = Path(root) if root is not None else mnist_root()
    try:
        from torchvision.datasets import MNIST
    except ImportError as exc:
        raise DataError("downloading MNIST needs torchvision") from exc
    for train in (True, False):
        MNIST(str(root), train=train, download=True)
    return root
