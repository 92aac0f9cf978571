"""Reading the edgedet metadata document embedded in exported graphs, without torch.

ONNX files carry it as the ``metadata_props`` entry ``edgedet`` (a JSON document); TorchScript
files (zip archives) as the extra file ``edgedet.json``. Both are read here with the standard
library, onnx or onnxruntime, so an edge device can inspect any exported graph.

:func:`read_metadata` is the one reader: it checks the document against its schema and returns a
:class:`GraphMetadata`, so a missing or mistyped field is one clear :class:`GraphFileError` naming
the file and the field, not a ``KeyError`` somewhere downstream. Documents without a ``schema``
key (written before it existed) are schema 1; unknown keys are ignored. The raw document stays
available as :attr:`GraphMetadata.doc` for family extras (strides, anchors, grid) and reports.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgedet import __version__
from edgedet.errors import EdgedetError

__all__ = ["METADATA_KEY", "TORCHSCRIPT_EXTRA_FILE", "SCHEMA_VERSION", "GraphFileError", "GraphMetadata",
           "InputSpec", "LetterboxSpec", "MasksSpec", "NmsSpec", "SegmentationSpec", "SourceSpec", "graph_format",
           "read_metadata"]

METADATA_KEY = "edgedet"
TORCHSCRIPT_EXTRA_FILE = "edgedet.json"
SCHEMA_VERSION = 1  # the newest document layout this edgedet reads (and export writes)


class GraphFileError(EdgedetError):
    """A file that is not an exported graph, or lacks edgedet metadata."""


@dataclass(frozen=True)
class InputSpec:
    """The graph's input tensor: uint8 NHWC BGR frames, or float32 NCHW RGB 0..1 (``--input float``)."""

    name: str
    layout: str
    dtype: str
    color: str
    height: int
    width: int
    dynamic_batch: bool
    dynamic_size: bool
    size_multiple: int

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` the graph was exported at."""
        return self.height, self.width


@dataclass(frozen=True)
class LetterboxSpec:
    """How frames become network inputs (the runtime's one letterbox rule); the border fill."""

    pad_value: tuple[int, ...]
    stride: int


@dataclass(frozen=True)
class NmsSpec:
    """The NMS baked into a detector graph (fields as :class:`edgedet.export.deploy.NMSSettings`)."""

    conf: float
    iou: float
    max_det: int
    max_candidates: int
    agnostic: bool


@dataclass(frozen=True)
class SegmentationSpec:
    """Segmenters: the class ids of background and of ignored pixels, and the class names."""

    background: int
    ignore: int
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class MasksSpec:
    """Instance segmenters: how the graph's ``masks`` output (uint8 0/1 ``[B, K, H, W]``, row k the
    mask of detection k, all 0 on padding rows) was made.

    Attributes:
        output: the output's name (``masks``).
        resolution: ``"input"`` (masks at the network input's H x W, like the boxes) or
            ``(h, w)`` of a lower resolution, to be upsampled by ``upsample``.
        upsample: the upsampling rule inside the graph (or for the consumer, with ``(h, w)``).
        crop: which pixels of a detection's box the mask may cover.
        threshold: the mask probability above which a pixel is set (already applied).
        prototypes, proto_stride: the prototype count and input pixels per prototype pixel.
    """

    output: str
    resolution: str | tuple[int, int]
    upsample: str
    crop: str
    threshold: float
    prototypes: int
    proto_stride: int

    @property
    def at_input(self) -> bool:
        """Masks come at the network input's size, aligned with the boxes."""
        return self.resolution == "input"


@dataclass(frozen=True)
class SourceSpec:
    """Where the exported weights came from: ``random-init``, ``checkpoint`` or ``darknet``."""

    kind: str
    checkpoint: str | None = None
    weights: str | None = None
    sha256: str | None = None

    @property
    def file(self) -> str | None:
        """The recorded weights file (checkpoint or darknet weights), if any."""
        return self.checkpoint or self.weights


@dataclass(frozen=True)
class GraphMetadata:
    """An exported graph's metadata document, checked and typed.

    Attributes:
        schema: the document layout version (1 when the document predates the key).
        edgedet_version: the edgedet that exported the graph.
        model, family, task: the registered model, its family and ``detection``,
            ``localization`` or ``segmentation``.
        class_names, num_classes: the model's classes.
        input: the input tensor. letterbox: the border fill (and stride) of the letterbox rule.
        outputs: the graph's output names, in output order.
        precision: ``fp32``, ``fp16`` or ``int8``.
        nms: detectors exported with NMS: its settings; otherwise ``None``.
        segmentation: segmenters only.
        masks: present exactly when the graph has a ``masks`` output (instance segmenters
            exported with NMS), else None.
        config: the model configuration (rebuilds the PyTorch reference).
        source: where the weights came from.
        doc: the raw document, for reports and family extras (``strides``, ``anchors``, ``grid``).
    """

    schema: int
    edgedet_version: str
    model: str
    family: str
    task: str
    class_names: tuple[str, ...]
    num_classes: int
    input: InputSpec
    letterbox: LetterboxSpec
    outputs: tuple[str, ...]
    precision: str
    nms: NmsSpec | None
    segmentation: SegmentationSpec | None
    config: dict[str, Any] = field(compare=False)
    source: SourceSpec
    doc: dict[str, Any] = field(repr=False, compare=False)
    masks: MasksSpec | None = None


# ---------------------------------------------------------------------------------------------
# Checking the document

_MISSING = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# kind -> (accepts a JSON value, what it should be in words)
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (_is_int, "an integer"),
    "number": (lambda v: _is_int(v) or isinstance(v, float), "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "object": (lambda v: isinstance(v, dict), "an object"),
    "names": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "pixel": (lambda v: _is_int(v) or (isinstance(v, list) and bool(v) and all(_is_int(x) for x in v)),
              "an integer or a list of integers"),
}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "a list" if isinstance(value, list) else "an object"


class _Document:
    """Typed look-ups into one metadata document; every failure names the file and the field."""

    def __init__(self, doc: dict[str, Any], path: Path) -> None:
        self.doc = doc
        self.path = path
        written = doc.get("edgedet_version")
        self.written = written if isinstance(written, str) else "unknown"

    def error(self, problem: str, hint: str = "") -> GraphFileError:
        return GraphFileError(f"{self.path}: edgedet metadata {problem} "
                              f"(written by edgedet {self.written}; this is {__version__}){hint}")

    def get(self, where: str, kind: str, default: Any = _MISSING, nullable: bool = False) -> Any:
        """The value at dotted path ``where`` (``input.height``), checked to be of ``kind``."""
        obj: Any = self.doc
        parts = where.split(".")
        for depth, key in enumerate(parts):
            if not isinstance(obj, dict):
                parent = ".".join(parts[:depth])
                raise self.error(f"field {parent} should be an object, not {_json_kind(obj)}")
            if key not in obj:
                if default is _MISSING:
                    raise self.error(f"field {'.'.join(parts[:depth + 1])} is missing")
                return default
            obj = obj[key]
        if obj is None and nullable:
            return None
        accepts, words = _KINDS[kind]
        if not accepts(obj):
            raise self.error(f"field {where} should be {words}, not {_json_kind(obj)}")
        return float(obj) if kind == "number" else obj


def _input(d: _Document) -> InputSpec:
    return InputSpec(name=d.get("input.name", "str"), layout=d.get("input.layout", "str"),
                     dtype=d.get("input.dtype", "str"), color=d.get("input.color", "str"),
                     height=d.get("input.height", "int"), width=d.get("input.width", "int"),
                     dynamic_batch=d.get("input.dynamic_batch", "bool"),
                     dynamic_size=d.get("input.dynamic_size", "bool"),
                     size_multiple=d.get("input.size_multiple", "int"))


def _letterbox(d: _Document) -> LetterboxSpec:
    pad = d.get("letterbox.pad_value", "pixel")
    return LetterboxSpec(pad_value=tuple(pad) if isinstance(pad, list) else (pad,) * 3,
                         stride=d.get("letterbox.stride", "int"))


def _nms(d: _Document) -> NmsSpec | None:
    if d.get("nms", "object", nullable=True) is None:
        return None
    return NmsSpec(conf=d.get("nms.conf", "number"), iou=d.get("nms.iou", "number"),
                   max_det=d.get("nms.max_det", "int"), max_candidates=d.get("nms.max_candidates", "int"),
                   agnostic=d.get("nms.agnostic", "bool"))


def _segmentation(d: _Document) -> SegmentationSpec | None:
    if d.get("segmentation", "object", default=None, nullable=True) is None:
        return None
    return SegmentationSpec(background=d.get("segmentation.background", "int"),
                            ignore=d.get("segmentation.ignore", "int"),
                            class_names=tuple(d.get("segmentation.class_names", "names")))


def _masks(d: _Document) -> MasksSpec | None:
    masks = d.get("masks", "object", default=None, nullable=True)
    if masks is None:
        return None
    if isinstance(masks.get("resolution"), str):
        resolution: str | tuple[int, int] = d.get("masks.resolution", "str")
    else:
        size = d.get("masks.resolution", "pixel")
        if not isinstance(size, list) or len(size) != 2:
            raise d.error("masks.resolution must be \"input\" or [h, w]")
        resolution = (int(size[0]), int(size[1]))
    return MasksSpec(output=d.get("masks.output", "str", default="masks"), resolution=resolution,
                     upsample=d.get("masks.upsample", "str"), crop=d.get("masks.crop", "str", default=""),
                     threshold=d.get("masks.threshold", "number"), prototypes=d.get("masks.prototypes", "int"),
                     proto_stride=d.get("masks.proto_stride", "int"))


def _source(d: _Document) -> SourceSpec:
    optional = {key: d.get(f"source.{key}", "str", default=None, nullable=True)
                for key in ("checkpoint", "weights", "sha256")}
    return SourceSpec(kind=d.get("source.kind", "str"), **optional)


def _typed(doc: Any, path: Path) -> GraphMetadata:
    if not isinstance(doc, dict):
        raise GraphFileError(f"{path}: edgedet metadata is not a JSON object")
    d = _Document(doc, path)
    schema = d.get("schema", "int", default=1)
    if schema > SCHEMA_VERSION:
        raise d.error(f"schema {schema} is newer than the schema {SCHEMA_VERSION} this edgedet reads",
                      "; upgrade edgedet to run this graph")
    if schema < 1:
        raise d.error(f"schema {schema} is not a schema version")
    return GraphMetadata(
        schema=schema, edgedet_version=d.get("edgedet_version", "str"), model=d.get("model", "str"),
        family=d.get("family", "str"), task=d.get("task", "str"),
        class_names=tuple(d.get("class_names", "names")), num_classes=d.get("num_classes", "int"),
        input=_input(d), letterbox=_letterbox(d), outputs=tuple(d.get("outputs", "names")),
        precision=d.get("precision", "str"), nms=_nms(d), segmentation=_segmentation(d),
        config=d.get("config", "object"), source=_source(d), doc=doc, masks=_masks(d))


def _parse(text: str | bytes, path: Path) -> GraphMetadata:
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise GraphFileError(f"{path}: edgedet metadata is not valid JSON") from None
    return _typed(doc, path)


# ---------------------------------------------------------------------------------------------
# Reading the files


def graph_format(path: str | os.PathLike) -> str:
    """``onnx`` or ``torchscript``, from the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".torchscript", ".pt", ".ts", ".jit"):
        return "torchscript"
    raise GraphFileError(f"{path}: not an exported graph (expected .onnx or .torchscript)")


def _onnx_metadata(path: Path) -> GraphMetadata:
    props: dict[str, str]
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception:  # onnx raises DecodeError and friends on junk
            raise GraphFileError(f"{path}: not a readable ONNX file") from None
        props = {p.key: p.value for p in model.metadata_props}
    else:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception:
            raise GraphFileError(f"{path}: not a readable ONNX file") from None
        props = dict(session.get_modelmeta().custom_metadata_map)
    if METADATA_KEY not in props:
        raise GraphFileError(f"{path}: ONNX file has no edgedet metadata (was it exported by edgedet?)")
    return _parse(props[METADATA_KEY], path)


def _torchscript_metadata(path: Path) -> GraphMetadata:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_EXTRA_FILE}")]
            if not names:
                raise GraphFileError(f"{path}: TorchScript file has no edgedet metadata "
                                     f"(was it exported by edgedet?)")
            return _parse(archive.read(names[0]), path)
    except zipfile.BadZipFile:
        raise GraphFileError(f"{path}: not a readable TorchScript file") from None


def read_metadata(path: str | os.PathLike) -> GraphMetadata:
    """The checked metadata of an exported ``.onnx`` or ``.torchscript`` file."""
    path = Path(path)
    fmt = graph_format(path)
    if not path.is_file():
        raise GraphFileError(f"{path} does not exist")
    return _onnx_metadata(path) if fmt == "onnx" else _torchscript_metadata(path)
