"""Execution provider names: what a user types (``auto``, ``tensorrt,cuda,cpu``) -> ONNX Runtime's names.

ONNX Runtime's provider names are the common vocabulary; TorchScript and OpenCV DNN read the
short names (``cuda``, ``cpu``) back from them.
"""

from __future__ import annotations

from typing import Sequence

from edgedet.runtime.backends.base import BackendError

__all__ = ["PROVIDER_ALIASES", "AUTO_PROVIDERS", "GPU_PROVIDERS", "resolve_providers", "short_name"]

# Short names a user types -> ONNX Runtime provider names.
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
AUTO_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_SHORT = {v: k for k, v in reversed(list(PROVIDER_ALIASES.items()))}


def short_name(provider: str) -> str:
    """``CUDAExecutionProvider`` -> ``cuda`` (unknown names unchanged)."""
    return _SHORT.get(provider, provider)


def resolve_providers(providers: str | Sequence[str]) -> tuple[list[str], bool]:
    """``"auto"``, ``"cuda,cpu"`` or a list -> (ONNX Runtime provider names, whether it was auto)."""
    if isinstance(providers, str):
        items = [p.strip() for p in providers.split(",") if p.strip()]
    else:
        items = [str(p).strip() for p in providers]
    if not items or items == ["auto"]:
        return list(AUTO_PROVIDERS), True
    names = []
    for item in items:
        name = PROVIDER_ALIASES.get(item.lower(), item)
        if not name.endswith("ExecutionProvider"):
            known = ", ".join(["auto", *dict.fromkeys(PROVIDER_ALIASES)])
            raise BackendError(f"unknown execution provider {item!r}; choose from {known}")
        if name not in names:
            names.append(name)
    return names, False
