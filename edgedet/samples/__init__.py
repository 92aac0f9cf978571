"""The small assets shipped inside edgedet, and the one place that knows where they lie.

``checkpoints/NAME.pt`` is a small trained checkpoint of the registered model ``NAME``, with its
training log ``checkpoints/NAME.csv`` beside it; ``images/*.png`` are frames to try exported
graphs on. ``README.md`` in this folder says how each checkpoint was trained. They are package
data, so a wheel carries them as well as a checkout; everything else (the quickstart, the
weights resolver, benchmarks, tests) asks this module rather than building paths.

Names are model names, never paths: a name holding a path separator, ``..``, a drive or
anything but letters, digits, ``.``, ``_`` and ``-`` raises :class:`SampleNameError` (a
``ValueError`` and an ``EdgedetError``); a well-formed name with no shipped file gives None.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from edgedet.errors import EdgedetError

__all__ = ["SampleNameError", "root", "checkpoint", "training_log", "images", "shipped_models"]

# Starts with a letter or digit, so "", ".", ".." and "/abs" cannot match; ".." inside is refused apart.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class SampleNameError(EdgedetError, ValueError):
    """A sample name that is not a plain model name (a path separator, ``..``, an absolute path)."""


def root() -> Path:
    """The folder holding the shipped samples (``.../edgedet/samples``)."""
    folder = files(__name__)
    # pip installs wheels unzipped and a checkout is a folder, so this is a real directory and
    # its files can be handed to torch.load, OpenCV and subprocesses; only a zip import is not.
    if not isinstance(folder, Path):
        raise EdgedetError(f"edgedet's samples are inside an archive ({folder}); install edgedet unzipped")
    return folder


def _check(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise SampleNameError(f"{name!r} is not a model name (letters, digits, '.', '_', '-'; no paths)")
    return name


def _asset(kind: str, name: str, suffix: str, folder: Path | None) -> Path | None:
    path = (root() if folder is None else Path(folder)) / kind / f"{_check(name)}{suffix}"
    return path if path.is_file() else None


def checkpoint(name: str, folder: Path | None = None) -> Path | None:
    """The checkpoint shipped for model ``name``, or None when none is shipped.

    Args:
        name: a registered model name, e.g. ``"yolov3-tiny"``.
        folder: a folder laid out like this one to look in instead (tests, custom asset sets).

    Raises:
        SampleNameError: ``name`` could leave the folder (``/``, ``\\``, ``..``, absolute).
    """
    return _asset("checkpoints", name, ".pt", folder)


def training_log(name: str, folder: Path | None = None) -> Path | None:
    """The training log (the run's ``results.csv``) of the checkpoint shipped for ``name``, or None."""
    return _asset("checkpoints", name, ".csv", folder)


def shipped_models(folder: Path | None = None) -> list[str]:
    """Names of the models that have a shipped checkpoint, sorted."""
    base = root() if folder is None else Path(folder)
    return sorted(p.stem for p in (base / "checkpoints").glob("*.pt"))


def images(folder: Path | None = None) -> list[Path]:
    """The shipped example frames (PNG), sorted by name."""
    base = root() if folder is None else Path(folder)
    return sorted((base / "images").glob("*.png"))
