"""A Triton Inference Server model repository for an exported ONNX graph.

``DIR/<name>/config.pbtxt`` and ``DIR/<name>/1/model.onnx``: platform ``onnxruntime_onnx``, the
batch dimension left to Triton (``max_batch_size``) with dynamic batching on, every other
dimension from the graph (``-1`` where it is dynamic). Outputs with only a batch dimension
(``num_dets``, a localizer's ``score`` and ``label``) are declared as ``[1]`` reshaped to ``[]``,
which is how Triton expresses a per-request scalar.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from edgedet.runtime.files import atomic_path, atomic_write_bytes

__all__ = ["write_triton_repository", "triton_config"]

_TRITON_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64",
                 "int32": "TYPE_INT32"}


def _tensor_block(v: dict[str, Any]) -> str:
    dims = [d if isinstance(d, int) and d > 0 else -1 for d in v["shape"][1:]]
    lines = [f'    name: "{v["name"]}"', f"    data_type: {_TRITON_TYPES[v['dtype']]}"]
    if dims:
        lines.append(f"    dims: [ {', '.join(map(str, dims))} ]")
    else:
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    return "  {\n" + "\n".join(lines) + "\n  }"


def triton_config(name: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
                  max_batch_size: int = 64) -> str:
    """The ``config.pbtxt`` text for a graph with these inputs and outputs (``graph_info`` form)."""
    return "\n".join([
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(_tensor_block(v) for v in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(v) for v in outputs) + "\n]",
        "dynamic_batching { }",
        "",
    ])


def write_triton_repository(onnx_path: str | os.PathLike, repo_dir: str | os.PathLike, name: str,
                            max_batch_size: int = 64) -> Path:
    """Write ``repo_dir/name/{config.pbtxt, 1/model.onnx}`` for an exported ONNX graph."""
    from edgedet.export.info import graph_info

    info = graph_info(onnx_path)
    model_dir = Path(repo_dir) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    with atomic_path(model_dir / "1" / "model.onnx") as tmp:
        shutil.copyfile(onnx_path, tmp)
    config = triton_config(name, info["inputs"], info["outputs"], max_batch_size)
    atomic_write_bytes(model_dir / "config.pbtxt", config.encode())
    return model_dir
