"""Darknet interop: ``.weights`` reading and writing, a small ``.cfg`` parser, the official files.

A ``.weights`` file is a header, then float32 parameters of every convolutional layer in cfg
order. The header is int32 ``major, minor, revision``, then the number of images seen during
training: int64 when ``major * 10 + minor >= 2``, else int32. Per convolution with
``batch_normalize=1``: BN beta (bias), gamma (scale), running mean, running variance, then the
kernel ``[out, in, k, k]``; without BN: the conv bias, then the kernel. Nothing else is stored,
so the file only makes sense next to the network it was trained with: the reader checks the float
count against the model and refuses any mismatch.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgedet.errors import WeightsError
from edgedet.runtime.files import atomic_path, file_digest

__all__ = [
    "COCO_CLASSES",
    "DarknetHeader",
    "CfgSection",
    "DarknetRelease",
    "DARKNET_RELEASES",
    "parse_darknet_cfg",
    "darknet_float_count",
    "load_darknet_weights",
    "save_darknet_weights",
    "resolve_darknet_weights",
]

# The 80 COCO detection categories in category-id order, named as in the COCO annotations.
# Darknet's coco.names lists the same classes in the same order but spells six differently
# (motorbike, aeroplane, sofa, pottedplant, diningtable, tvmonitor).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

_FLOAT = np.dtype("<f4")  # darknet writes host-order floats; every platform it ran on is little-endian


# ----------------------------------------------------------------------------------------- cfg


@dataclass
class CfgSection:
    """One ``[kind]`` section of a darknet cfg with its ``key=value`` options (as strings)."""

    kind: str
    options: dict[str, str] = field(default_factory=dict)

    def get_int(self, key: str, default: int) -> int:
        return int(self.options.get(key, default))

    def get_ints(self, key: str) -> tuple[int, ...]:
        return tuple(int(v) for v in self.options.get(key, "").split(",") if v.strip())


def parse_darknet_cfg(path: str | Path) -> list[CfgSection]:
    """Sections of a darknet ``.cfg`` in file order, ``[net]`` included when present.

    Comments start with ``#`` or ``;``; whitespace around keys and values is ignored. Enough of
    darknet's format to check a network's layout against the official cfgs, no more.
    """
    sections: list[CfgSection] = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"{path}:{number}: unterminated section header {raw!r}")
            sections.append(CfgSection(line[1:-1].strip()))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1].options[key.strip()] = value.strip()
        else:
            raise ValueError(f"{path}:{number}: expected [section] or key=value, got {raw!r}")
    return sections


# ------------------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class DarknetHeader:
    """A ``.weights`` file's header: format version and images seen in training."""

    major: int
    minor: int
    revision: int
    seen: int

    @property
    def seen_is_int64(self) -> bool:
        return self.major * 10 + self.minor >= 2


def _conv_parts(module: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d | None]:
    # A darknet conv layer is either conv + BN (+ activation) or a conv with its own bias.
    if isinstance(module, nn.Conv2d):
        return module, None
    conv, bn = module[0], module[1]
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"expected conv + BatchNorm, got {type(module).__name__}")
    return conv, bn


def _darknet_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The model's parameters and BN statistics in ``.weights`` order."""
    tensors = []
    for module in model.darknet_convs():
        conv, bn = _conv_parts(module)
        if bn is not None:
            tensors += [bn.bias, bn.weight, bn.running_mean, bn.running_var]
        else:
            tensors.append(conv.bias)
        tensors.append(conv.weight)
    return tensors


def _check_darknet_layout(model: nn.Module) -> None:
    if not hasattr(model, "darknet_convs"):
        raise WeightsError(f"{_model_label(model)} has no darknet layout; darknet weights fit "
                           "yolov3 and yolov3-tiny only")
    cfg = getattr(model, "cfg", None)
    if cfg is not None and (getattr(cfg, "width", 1.0) != 1.0 or getattr(cfg, "depth", 1.0) != 1.0):
        raise WeightsError(f"darknet weights need width=1 and depth=1 (the cfg's layout); "
                           f"{_model_label(model)} has width={cfg.width}, depth={cfg.depth}")


def _model_label(model: nn.Module) -> str:
    name = getattr(model, "model_name", type(model).__name__)
    cfg = getattr(model, "cfg", None)
    return f"{name} with {cfg.num_classes} classes" if cfg is not None else name


def darknet_float_count(model: nn.Module) -> int:
    """Number of float32 values the model's ``.weights`` file holds after the header."""
    _check_darknet_layout(model)
    return sum(t.numel() for t in _darknet_tensors(model))


def _read_header(data: memoryview, name: str) -> tuple[DarknetHeader, int]:
    if len(data) < 16:
        raise WeightsError(f"{name} is {len(data)} bytes, too short for a darknet weights header")
    major, minor, revision = struct.unpack_from("<3i", data, 0)
    # Darknet writes versions 0.1.0 to 0.2.x; darknet itself reads a version past 1000 as
    # "transposed" connected layers, which no YOLOv3 file has. Anything else is not a weights file.
    if not all(0 <= v < 1000 for v in (major, minor, revision)):
        raise WeightsError(f"{name} is not a darknet .weights file (header version {major}.{minor}.{revision})")
    if major * 10 + minor >= 2:
        if len(data) < 20:
            raise WeightsError(f"{name} is {len(data)} bytes, too short for a darknet weights header")
        (seen,) = struct.unpack_from("<q", data, 12)
        return DarknetHeader(major, minor, revision, seen), 20
    (seen,) = struct.unpack_from("<i", data, 12)
    return DarknetHeader(major, minor, revision, seen), 16


def load_darknet_weights(model: nn.Module, path: str | Path) -> DarknetHeader:
    """Copy a darknet ``.weights`` file into ``model`` (yolov3 / yolov3-tiny at width = depth = 1).

    Args:
        model: a model with ``darknet_convs()``, e.g. ``create_model("yolov3")``.
        path: the ``.weights`` file, or ``darknet:yolov3`` / ``darknet:yolov3-tiny`` for the
            official COCO files (see :func:`resolve_darknet_weights`).

    Returns:
        The file's header.

    Raises:
        WeightsError: unreadable file, or a float count that does not match the model (a wrong
            class count, the other variant, a truncated download), naming both counts.
    """
    _check_darknet_layout(model)
    if isinstance(path, str) and path.startswith("darknet:"):
        path = resolve_darknet_weights(path)
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise WeightsError(f"cannot read darknet weights {path}: {e.strerror or e}") from None
    header, offset = _read_header(memoryview(raw), path.name)
    tensors = _darknet_tensors(model)
    needed = sum(t.numel() for t in tensors)
    body = len(raw) - offset
    found, leftover = divmod(body, _FLOAT.itemsize)
    if found != needed or leftover:
        extra = f" and {leftover} stray bytes" if leftover else ""
        raise WeightsError(f"{path.name} holds {found:,} floats{extra} but {_model_label(model)} "
                           f"needs {needed:,}")
    values = torch.from_numpy(np.frombuffer(raw, dtype=_FLOAT, offset=offset).copy())
    start = 0
    with torch.no_grad():
        for t in tensors:
            chunk = values[start:start + t.numel()]
            t.copy_(chunk.view(t.shape))
            start += t.numel()
    return header


def save_darknet_weights(model: nn.Module, path: str | Path, seen: int = 0) -> Path:
    """Write ``model`` as a darknet ``.weights`` file (version 0.2.0, int64 ``seen``).

    The file loads in darknet and OpenCV's ``readNetFromDarknet`` with the matching official cfg
    (and the class count's ``filters`` edited, for other class counts). Written atomically.
    """
    _check_darknet_layout(model)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<3iq", 0, 2, 0, seen))
        for t in _darknet_tensors(model):
            f.write(t.detach().to("cpu", torch.float32).contiguous().numpy().astype(_FLOAT).tobytes())
    return path


# ------------------------------------------------------------------------------ official files


@dataclass(frozen=True)
class DarknetRelease:
    """An official darknet COCO weights file: where to get it and its checksum."""

    file: str
    urls: tuple[str, ...]
    sha256: str


# The sha256 values are the ones pinned by independent downloaders of these exact URLs (e.g. the
# TensorFlow Model Garden YOLO project's darknet download table and the `darknet` Rust crate's
# yolov3-tiny example); the same files' md5 sums, c84e5b99d0e52cd466ae710cadf6d84c (yolov3) and
# 3bcd6b390912c18924b46b26a9e7ff53 (yolov3-tiny), are reported in pjreddie/darknet#633 and
# hank-ai/darknet#21. pjreddie.com has at times answered with an HTML page (pjreddie/darknet#2655),
# hence the hank-ai release mirror of the identical files; the checksum decides either way.
DARKNET_RELEASES: dict[str, DarknetRelease] = {
    "yolov3": DarknetRelease(
        "yolov3.weights",
        ("https://pjreddie.com/media/files/yolov3.weights",
         "https://github.com/hank-ai/darknet/releases/download/v2.0/yolov3.weights"),
        "523e4e69e1d015393a1b0a441cef1d9c7659e3eb2d7e15f793f060a21b32f297",
    ),
    "yolov3-tiny": DarknetRelease(
        "yolov3-tiny.weights",
        ("https://pjreddie.com/media/files/yolov3-tiny.weights",
         "https://github.com/hank-ai/darknet/releases/download/v2.0/yolov3-tiny.weights"),
        "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
    ),
}


DOWNLOAD_TIMEOUT_S = 30.0


def _download(url: str, dest: Path) -> None:
    # torch.hub's downloader: streaming, progress bar, temp file + rename of its own. It takes no
    # timeout, so bound every socket operation: a stalled network fails instead of hanging.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(dest), progress=True)
    finally:
        socket.setdefaulttimeout(previous)


def resolve_darknet_weights(spec: str) -> Path:
    """The local path of an official darknet COCO file: ``darknet:yolov3`` or ``darknet:yolov3-tiny``.

    Looks in ``torch.hub.get_dir()/checkpoints/<name>.weights``; a file there is used as it is.
    Otherwise downloads it, checks its sha256 and only then moves it into place.

    Raises:
        WeightsError: unknown spec, or no download passed (offline, refused, wrong checksum); the
            message says where to put a manually downloaded file.
    """
    name = spec.removeprefix("darknet:")
    release = DARKNET_RELEASES.get(name) if spec.startswith("darknet:") else None
    if release is None:
        known = ", ".join(f"darknet:{k}" for k in DARKNET_RELEASES)
        raise WeightsError(f"unknown darknet weights {spec!r}; known: {known}")
    target = Path(torch.hub.get_dir()) / "checkpoints" / release.file
    if target.is_file():
        return target
    problems = []
    for url in release.urls:
        try:
            with atomic_path(target) as tmp:
                _download(url, tmp)
                digest = file_digest(tmp)
                if digest != release.sha256:
                    raise WeightsError(f"{url} gave a file with sha256 {digest[:12]}..., "
                                       f"expected {release.sha256[:12]}...")
            return target
        except WeightsError as e:
            problems.append(str(e))
        except Exception as e:  # offline, HTTP errors, disk full: try the next mirror
            problems.append(f"{url}: {type(e).__name__}: {e}".splitlines()[0])
    raise WeightsError(f"could not download {release.file} ({problems[-1]}); download it from "
                       f"{release.urls[0]} and put it at {target}")
