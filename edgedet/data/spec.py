"""Dataset spec strings, the one value ``--data`` takes, and :func:`build_dataset`.

Grammar::

    spec    := NAME [ ":" body ]
    body    := options | PATH [ "," options ]
    options := KEY "=" VALUE { "," KEY "=" VALUE }

The first field of the body is the path when it holds no ``=``; a body that names an existing
file or folder as a whole is a path even if it contains commas. Paths may start with ``~``.

Examples::

    digits-loc                      digits-loc:n=500,seed=3
    digits-grid:glyphs=builtin      clutter:size=96x128,max_digits=8
    digits-scene:glyphs=builtin,size=480x640,max_digits=20
    pennfudan:~/data/PennFudanPed   pennfudan:~/data/PennFudanPed,val_every=5
    yolo:datasets/plates            coco:annotations/instances.json,images=val2017

Datasets and their options (``n`` lengths default to 10000 train / 2000 val):

================  ==========================================================================
``digits-loc``    n, seed, glyphs=auto|mnist|builtin, empty (chance of no digit, 0.25)
``digits-grid``   n, seed, glyphs, fill (chance a cell holds a digit, 0.5)
``clutter``       n, seed, glyphs, size (N or HxW, 128), max_digits (5)
``digits-scene``  n, seed, glyphs, size (N or HxW, 240x320), max_digits (8), min_digits (2)
``pennfudan``     PATH (holds PNGImages/ and PedMasks/), val_every (10)
``yolo``          PATH (holds images/, labels/, classes.txt or data.yaml), val_every (10)
``coco``          PATH.json, images (folder, default: the json's folder), val_every (10),
                  masks (false; true reads polygon masks)
================  ==========================================================================

Sets on disk split every ``val_every``-th file (sorted; the 10th, 20th, ...) into 'val' and the
rest into 'train', unless the layout has its own split; ``val_every=0`` puts every file in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgedet.data.coco import CocoDataset
from edgedet.data.pennfudan import PennFudan
from edgedet.data.sample import SampleDataset, check_split
from edgedet.data.synthetic import Clutter, DigitsGrid, DigitsLocalization, DigitsScene
from edgedet.data.yolo import YoloDataset
from edgedet.errors import DataError

__all__ = ["DatasetSpec", "parse_spec", "build_dataset", "list_datasets", "describe_datasets"]


def _int(value: str) -> int:
    return int(value)


def _float(value: str) -> float:
    return float(value)


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _size(value: str) -> int | tuple[int, int]:
    parts = value.lower().split("x")
    if len(parts) == 1:
        return int(parts[0])
    if len(parts) == 2:
        return int(parts[0]), int(parts[1])
    raise ValueError(f"expected N or HxW, got {value!r}")


def _str(value: str) -> str:
    return value


_DIGIT_OPTIONS = {"n": _int, "seed": _int, "glyphs": _str}


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., SampleDataset]
    options: dict[str, Callable[[str], Any]]
    takes_path: bool = False
    summary: str = ""


_DATASETS: dict[str, _Entry] = {
    "digits-loc": _Entry(DigitsLocalization, {**_DIGIT_OPTIONS, "empty": _float},
                         summary="48x60 grey, zero or one digit (localization)"),
    "digits-grid": _Entry(DigitsGrid, {**_DIGIT_OPTIONS, "fill": _float},
                          summary="48x60 grey, digits 0/1 in a 2x3 grid (detection)"),
    "clutter": _Entry(Clutter, {**_DIGIT_OPTIONS, "size": _size, "max_digits": _int},
                      summary="colour MNIST Clutter with instance and semantic masks"),
    "digits-scene": _Entry(DigitsScene, {**_DIGIT_OPTIONS, "size": _size, "max_digits": _int, "min_digits": _int},
                           summary="240x320 grey scenes of several digits-loc digits (detection)"),
    "pennfudan": _Entry(PennFudan, {"val_every": _int}, takes_path=True,
                        summary="Penn-Fudan pedestrians: PATH/PNGImages, PATH/PedMasks"),
    "yolo": _Entry(YoloDataset, {"val_every": _int}, takes_path=True,
                   summary="YOLO txt labels: PATH/images, PATH/labels, PATH/classes.txt"),
    "coco": _Entry(CocoDataset, {"images": _str, "val_every": _int, "masks": _bool}, takes_path=True,
                   summary="COCO json: PATH.json (images beside it or images=DIR)"),
}


def list_datasets() -> list[str]:
    """Names of the dataset kinds a spec can start with."""
    return list(_DATASETS)


def describe_datasets() -> dict[str, str]:
    """One line per dataset kind, with its options, for help texts."""
    lines = {}
    for name, entry in _DATASETS.items():
        usage = f"{name}:PATH" if entry.takes_path else name
        lines[usage] = f"{entry.summary}; options: {', '.join(entry.options)}"
    return lines


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: dataset ``name``, optional ``path`` and typed ``options``."""

    name: str
    path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)


def parse_spec(spec: str) -> DatasetSpec:
    """Parse a spec string (grammar in the module docstring); raises :class:`DataError`."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError("empty dataset spec; expected one of: " + ", ".join(_DATASETS))
    name, _, body = spec.strip().partition(":")
    key = name.strip().lower().replace("_", "-")
    entry = _DATASETS.get(key)
    if entry is None:
        raise DataError(f"unknown dataset {name.strip()!r}; known datasets: {', '.join(_DATASETS)}")

    path: Path | None = None
    fields = [f.strip() for f in body.split(",")] if body else []
    if entry.takes_path:
        if body and Path(body).expanduser().exists():
            fields = []
            path = Path(body).expanduser()
        elif fields and "=" not in fields[0]:
            path = Path(fields.pop(0)).expanduser()
        if path is None or not str(path):
            raise DataError(f"dataset {key!r} needs a path: {key}:PATH")

    options: dict[str, Any] = {}
    for item in fields:
        if not item:
            continue
        opt, eq, value = item.partition("=")
        opt = opt.strip()
        if not eq:
            raise DataError(f"bad option {item!r} in spec {spec!r}; expected key=value"
                            + ("" if entry.takes_path else f" ({key} takes no path)"))
        if opt not in entry.options:
            valid = ", ".join(entry.options) or "none"
            raise DataError(f"unknown option {opt!r} for dataset {key!r}; valid options: {valid}")
        if opt in options:
            raise DataError(f"option {opt!r} given twice in spec {spec!r}")
        try:
            options[opt] = entry.options[opt](value.strip())
        except ValueError as exc:
            raise DataError(f"bad value for option {opt!r} in spec {spec!r}: {exc}") from exc
    return DatasetSpec(key, path, options)


def build_dataset(spec: str | DatasetSpec, split: str = "train") -> SampleDataset:
    """Build the dataset a spec names, for 'train' or 'val'.

    Raises:
        DataError: unknown name, bad option, or a missing or invalid file of a set on disk.
    """
    check_split(split)
    parsed = spec if isinstance(spec, DatasetSpec) else parse_spec(spec)
    entry = _DATASETS[parsed.name]
    if entry.takes_path:
        return entry.builder(parsed.path, split=split, **parsed.options)
    return entry.builder(split=split, **parsed.options)
