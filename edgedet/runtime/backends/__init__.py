"""Running an exported graph: ONNX Runtime, TorchScript or OpenCV DNN behind one interface.

One module per backend (:mod:`.ort`, :mod:`.openvino`, :mod:`.torchscript`, :mod:`.opencv`), the shared interface
and input contract in :mod:`.base`, provider names in :mod:`.providers`; :func:`create_backend`
picks one for a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from edgedet.runtime.backends.base import Backend, BackendError, BackendUnavailable, ProviderWarning
from edgedet.runtime.backends.opencv import OpenCVBackend
from edgedet.runtime.backends.openvino import OpenVINOBackend, split_backend
from edgedet.runtime.backends.ort import DEFAULT_SPINNING, SPIN_MODES, OrtBackend, trt_cache_dir
from edgedet.runtime.backends.providers import AUTO_PROVIDERS, PROVIDER_ALIASES, resolve_providers
from edgedet.runtime.backends.torchscript import TorchScriptBackend
from edgedet.runtime.cpu import physical_cores
from edgedet.runtime.metadata import GraphMetadata, graph_format, read_metadata

__all__ = ["Backend", "BackendError", "BackendUnavailable", "ProviderWarning", "OrtBackend", "TorchScriptBackend", "OpenCVBackend",
           "OpenVINOBackend", "create_backend", "split_backend", "resolve_providers", "physical_cores", "trt_cache_dir", "BACKENDS",
           "PROVIDER_ALIASES", "AUTO_PROVIDERS", "SPIN_MODES", "DEFAULT_SPINNING"]

# ``openvino`` computes in f32; ``openvino-bf16`` / ``openvino-f16`` ask for reduced precision by name.
BACKENDS = ("onnxruntime", "openvino", "openvino-bf16", "openvino-f16", "torchscript", "opencv")


def create_backend(path: str | os.PathLike, backend: str = "auto", providers: str | Sequence[str] = "auto",
                   threads: int | None = None, *, max_batch: int = 1, metadata: GraphMetadata | None = None,
                   spinning: str = DEFAULT_SPINNING) -> Backend:
    """Load an exported ``.onnx`` or ``.torchscript`` graph on a backend.

    Args:
        path: the exported graph (it must carry edgedet metadata).
        backend: ``auto`` (ONNX Runtime for ``.onnx``, TorchScript for ``.torchscript``),
            ``onnxruntime``, ``openvino`` (f32), ``openvino-bf16``, ``openvino-f16``,
            ``torchscript`` or ``opencv``.
        providers: ``auto`` or a comma-separated list / sequence (``tensorrt,cuda,cpu``); for
            TorchScript and OpenCV, ``cuda`` or ``cpu``. An explicitly named provider that is not
            installed or cannot load is an error; ``auto`` falls back with a warning.
        threads: CPU threads (default: the physical cores this process may use).
        max_batch: the largest batch that will be run (sizes TensorRT's optimisation profile).
        metadata: the graph's metadata when already read.
        spinning: ONNX Runtime: what idle intra-op threads do, ``off`` (sleep), ``in-run`` (spin
            during a run only) or ``on`` (ONNX Runtime's own default: spin, taking cycles from
            other threads); see ``SPIN_MODES`` in :mod:`edgedet.runtime.backends.ort`.
    """
    path = Path(path)
    fmt = graph_format(path)
    metadata = metadata if metadata is not None else read_metadata(path)
    if backend == "auto":
        backend = "onnxruntime" if fmt == "onnx" else "torchscript"
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    base, precision = split_backend(backend)
    if base in ("onnxruntime", "openvino", "opencv") and fmt != "onnx":
        raise BackendError(f"the {backend} backend runs .onnx files; {path.name} is TorchScript "
                           f"(use --backend torchscript)")
    if backend == "torchscript" and fmt != "torchscript":
        raise BackendError(f"the torchscript backend runs .torchscript files; {path.name} is ONNX")
    if backend == "onnxruntime":
        return OrtBackend(path, metadata, providers, threads, max_batch=max_batch, spinning=spinning)
    if base == "openvino":
        return OpenVINOBackend(path, metadata, providers, threads, precision=precision)
    if backend == "torchscript":
        return TorchScriptBackend(path, metadata, providers, threads)
    return OpenCVBackend(path, metadata, providers, threads)
