"""Reading the edgedet metadata document embedded in exported graphs, without torch.

ONNX files carry it as the ``metadata_props`` entry ``edgedet`` (a JSON document); TorchScript
files (zip archives) as the extra file ``edgedet.json``. Both are read here with the standard
library, onnx or onnxruntime, so an edge device can inspect any exported graph.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from edgedet.errors import EdgedetError

__all__ = ["METADATA_KEY", "TORCHSCRIPT_EXTRA_FILE", "GraphFileError", "graph_format", "read_metadata"]

METADATA_KEY = "edgedet"
TORCHSCRIPT_EXTRA_FILE = "edgedet.json"


class GraphFileError(EdgedetError):
    """A file that is not an exported graph, or lacks edgedet metadata."""


def graph_format(path: str | os.PathLike) -> str:
    """``onnx`` or ``torchscript``, from the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".torchscript", ".pt", ".ts", ".jit"):
        return "torchscript"
    raise GraphFileError(f"{path}: not an exported graph (expected .onnx or .torchscript)")


def _parse(text: str | bytes, path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise GraphFileError(f"{path}: edgedet metadata is not valid JSON") from None
    if not isinstance(doc, dict) or "model" not in doc or "task" not in doc:
        raise GraphFileError(f"{path}: edgedet metadata lacks 'model' or 'task'")
    return doc


def _onnx_metadata(path: Path) -> dict[str, Any]:
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


def _torchscript_metadata(path: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_EXTRA_FILE}")]
            if not names:
                raise GraphFileError(f"{path}: TorchScript file has no edgedet metadata "
                                     f"(was it exported by edgedet?)")
            return _parse(archive.read(names[0]), path)
    except zipfile.BadZipFile:
        raise GraphFileError(f"{path}: not a readable TorchScript file") from None


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata document of an exported ``.onnx`` or ``.torchscript`` file."""
    path = Path(path)
    fmt = graph_format(path)
    if not path.is_file():
        raise GraphFileError(f"{path} does not exist")
    return _onnx_metadata(path) if fmt == "onnx" else _torchscript_metadata(path)
