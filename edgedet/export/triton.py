"""A Triton Inference Server model repository for an exported ONNX graph.

``DIR/<name>/config.pbtxt`` and ``DIR/<name>/<version>/model.onnx``, for one of two backends:

- ``onnxruntime`` (the default): platform ``onnxruntime_onnx``, served by Triton's ONNX Runtime
  backend, as in NVIDIA's Triton containers.
- ``python``: ``backend: "python"`` and ``<version>/model.py`` beside the same ``model.onnx``; the
  script (:mod:`edgedet.export.triton_python_model`, copied unchanged) runs the graph through ONNX
  Runtime inside Triton's Python backend. This is the backend of the ``tritonserver`` that the
  ``nvidia-pytriton`` wheel bundles, which has no ONNX Runtime backend. The server's Python
  environment must hold numpy < 2 (the wheel's backend stub reads arrays wrongly under numpy 2:
  inputs arrive as zeros and outputs come back empty) and onnxruntime; README, "Serving at
  scale: Triton", shows how to set one up.

Both configs declare the same inputs, outputs and dynamic batching: the batch dimension left to
Triton (``max_batch_size``), every other dimension from the graph (``-1`` where it is dynamic).
Outputs with only a batch dimension (``num_dets``, a localizer's ``score`` and ``label``) are
declared as ``[1]`` reshaped to ``[]``, which is how Triton expresses a per-request scalar.

An existing model is never overwritten. Exporting again into a repository that already holds
``<name>`` with the same ``config.pbtxt`` adds the next version (``2/model.onnx``, ...; Triton
serves the newest by default) and says so; a model of that name whose config differs (other
backend, inputs, outputs or batch size) is refused, because one config describes every version.
The name is a plain model name (letters, digits, ``_``, ``-``, ``.``), so it cannot leave the repository.
Files are written atomically and readable per the umask.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from edgedet.export.options import TRITON_BACKENDS
from edgedet.runtime.files import (
    OutputError,
    UnsafeNameError,
    atomic_path,
    atomic_write_bytes,
    check_name,
)

__all__ = ["TritonModel", "TritonError", "write_triton_repository", "triton_config", "check_triton_name",
           "python_model_script", "TRITON_BACKENDS"]


class TritonError(OutputError):
    """A Triton repository that already holds a different model of the same name."""


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_triton_name(name: str) -> str:
    """``name`` if Triton accepts it as a model (and folder) name, else :class:`UnsafeNameError`."""
    check_name(name, "Triton model name")
    if not _NAME.match(name):
        raise UnsafeNameError(f"Triton model name {name!r}: use letters, digits, '_', '-' and '.' only")
    return name


@dataclass(frozen=True)
class TritonModel:
    """What :func:`write_triton_repository` wrote: the model folder and the version added."""

    model_dir: Path
    version: int
    new_model: bool
    backend: str = "onnxruntime"

    @property
    def note(self) -> str:
        if self.new_model:
            return f"wrote Triton model repository {self.model_dir} (version {self.version}, {self.backend} backend)"
        return (f"added version {self.version} to the existing Triton model {self.model_dir} "
                f"(config unchanged; Triton serves the newest version)")

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
                  max_batch_size: int = 64, backend: str = "onnxruntime") -> str:
    """The ``config.pbtxt`` text for a graph with these inputs and outputs (``graph_info`` form),
    served by ``backend`` (one of :data:`TRITON_BACKENDS`)."""
    if backend not in TRITON_BACKENDS:
        raise ValueError(f"unknown Triton backend {backend!r}; choose from {', '.join(TRITON_BACKENDS)}")
    return "\n".join([
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"' if backend == "onnxruntime" else 'backend: "python"',
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(_tensor_block(v) for v in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(v) for v in outputs) + "\n]",
        "dynamic_batching { }",
        "",
    ])


def _versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def python_model_script() -> bytes:
    """The ``model.py`` of the python backend (:mod:`edgedet.export.triton_python_model`)."""
    return files("edgedet.export").joinpath("triton_python_model.py").read_bytes()


def write_triton_repository(onnx_path: str | os.PathLike, repo_dir: str | os.PathLike, name: str,
                            max_batch_size: int = 64, backend: str = "onnxruntime") -> TritonModel:
    """Write ``repo_dir/name/{config.pbtxt, VERSION/model.onnx}`` for an exported ONNX graph,
    plus ``VERSION/model.py`` for the ``python`` backend.

    A new model gets version 1; an existing one with the same config gets the next version;
    an existing one with another config (another backend included) raises :class:`TritonError`
    and nothing is written.
    """
    from edgedet.export.info import graph_info

    model_dir = Path(repo_dir) / check_triton_name(name)
    info = graph_info(onnx_path)
    config = triton_config(name, info["inputs"], info["outputs"], max_batch_size, backend)
    config_path = model_dir / "config.pbtxt"
    existing = config_path.read_text(encoding="utf-8", errors="replace") if config_path.is_file() else None
    if existing is not None and existing != config:
        raise TritonError(f"{model_dir} already holds a Triton model {name!r} with a different config.pbtxt "
                          f"(backend, inputs, outputs or batch size differ); nothing was written there: give another "
                          f"--name, or move the old model away")
    versions = _versions(model_dir)
    version = versions[-1] + 1 if versions else 1
    version_dir = model_dir / str(version)
    try:
        version_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise TritonError(f"{version_dir} appeared while writing (another export?); try again") from None
    except OSError as e:
        raise OutputError(f"cannot write to {model_dir}: {e.strerror or e}") from None
    try:
        with atomic_path(version_dir / "model.onnx") as tmp:
            shutil.copyfile(onnx_path, tmp)
        if backend == "python":
            atomic_write_bytes(version_dir / "model.py", python_model_script())
        if existing is None:
            atomic_write_bytes(config_path, config.encode())
    except BaseException:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise
    return TritonModel(model_dir, version, new_model=existing is None, backend=backend)
