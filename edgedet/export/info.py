"""``edgedet info FILE``: what an exported graph expects and returns, and how it was made.

Torch-free: ONNX files are read with onnx (or onnxruntime), TorchScript files as zip archives.
:func:`graph_info` gives the checked :class:`~edgedet.runtime.metadata.GraphMetadata` under
``metadata``; the JSON report carries its full document.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from edgedet.runtime.metadata import GraphFileError, GraphMetadata, graph_format, read_metadata

__all__ = ["graph_info", "format_info"]


def _dims(value_info: Any) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def graph_info(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata (typed) plus, for ONNX, inputs/outputs with shapes and dtypes, opset and operator counts."""
    path = Path(path)
    meta = read_metadata(path)
    info: dict[str, Any] = {"file": str(path), "format": graph_format(path), "bytes": path.stat().st_size,
                            "metadata": meta}
    if info["format"] == "onnx":
        try:
            import onnx
            from onnx import helper
        except ImportError:  # the runtime-only install: metadata only, and say why
            info["note"] = "input/output shapes, opset and operators not shown: needs the onnx package (pip install onnx)"
            return info
        model = onnx.load(str(path), load_external_data=False)
        name_of = lambda t: helper.tensor_dtype_to_np_dtype(t).name  # noqa: E731
        info["inputs"] = [{"name": v.name, "dtype": name_of(v.type.tensor_type.elem_type), "shape": _dims(v)}
                          for v in model.graph.input]
        info["outputs"] = [{"name": v.name, "dtype": name_of(v.type.tensor_type.elem_type), "shape": _dims(v)}
                           for v in model.graph.output]
        info["opset"] = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        info["operators"] = dict(Counter(n.op_type for n in model.graph.node).most_common())
        info["nodes"] = len(model.graph.node)
    return info


def format_info(info: dict[str, Any]) -> str:
    """A human-readable report of :func:`graph_info`."""
    meta: GraphMetadata = info["metadata"]
    inp = meta.input
    lines = [
        f"file        {info['file']} ({info['bytes'] / 1e6:.2f} MB, {info['format']})",
        f"model       {meta.model} ({meta.task}), edgedet {meta.edgedet_version}, {meta.precision}",
        f"classes     {meta.num_classes}: {', '.join(meta.class_names[:12])}"
        + (" ..." if meta.num_classes > 12 else ""),
        f"input       {inp.name} {inp.dtype} {inp.layout} {inp.color} {inp.height}x{inp.width}"
        f"{' (dynamic size, multiple of ' + str(inp.size_multiple) + ')' if inp.dynamic_size else ''}"
        f", dynamic batch",
        f"letterbox   pad {meta.letterbox.pad_value[0]}, centred, keep aspect",
    ]
    if meta.nms:
        n = meta.nms
        lines.append(f"nms         conf {n.conf}, iou {n.iou}, max_det {n.max_det}, "
                     f"{'agnostic' if n.agnostic else 'per class'}")
    if meta.masks is not None:  # instance segmenters: the contract of the masks output
        m = meta.masks
        where = f"input resolution ({inp.height}x{inp.width})" if m.at_input else \
            f"{m.resolution[0]}x{m.resolution[1]} (to the input: {m.upsample})"
        lines.append(f"masks       uint8 0/1 per detection at {where}, cropped to boxes, threshold {m.threshold:g}")
    if "strides" in meta.doc:  # a family extra, shown when the family records one
        lines.append(f"strides     {meta.doc['strides']}")
    src = meta.source
    lines.append(f"weights     {src.kind} {src.file or ''} sha256 {(src.sha256 or '?')[:16]}")
    if "inputs" in info:
        for kind in ("inputs", "outputs"):
            for v in info[kind]:
                lines.append(f"{kind[:-1]:<11} {v['name']} {v['dtype']} {v['shape']}")
        lines.append(f"opset       {', '.join(f'{k} {v}' for k, v in info['opset'].items())}")
        ops = ", ".join(f"{k} {v}" for k, v in info["operators"].items())
        lines.append(f"operators   {info['nodes']} nodes: {ops}")
    else:
        lines.append(f"outputs     {', '.join(meta.outputs)}")
    if info.get("note"):
        lines.append(f"note        {info['note']}")
    return "\n".join(lines)


def info_json(path: str | os.PathLike) -> str:
    """:func:`graph_info` as JSON, with the full metadata document."""
    info = graph_info(path)
    return json.dumps(dict(info, metadata=info["metadata"].doc), indent=2, sort_keys=True)


__all__ += ["info_json", "GraphFileError"]
