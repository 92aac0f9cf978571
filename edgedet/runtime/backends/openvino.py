"""OpenVINO: Intel's runtime compiles the same ``.onnx`` file for the CPU (or an Intel GPU).

No new export format: OpenVINO reads edgedet's ONNX graphs directly, NMS, dynamic batch and
dynamic sizes included. It is an optional extra (``pip install "edgedet[openvino]"``), never
part of the edge base install.

Precision. ``openvino`` computes in f32 (``INFERENCE_PRECISION_HINT=f32``): it matches PyTorch
as ONNX Runtime does, and parity judges it with the graph's own tolerance. OpenVINO's own CPU
default on processors with AVX-512 bf16 / AMX is bf16, which is about twice as fast there but
moves raw outputs by up to a few percent; edgedet never picks it silently. Ask for it by name:
``openvino-bf16`` (or ``openvino-f16`` where the device has f16 arithmetic). Parity judges those
runs with :meth:`edgedet.parity.compare.Tolerance.bf16`, per detection, with detections near the
confidence and NMS thresholds treated as ambiguous, as for fp16 graphs.

Devices: ``cpu`` (default) or ``gpu`` (an Intel GPU OpenVINO can see), from ``--providers``.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from edgedet.runtime.backends.base import Backend, BackendError, BackendUnavailable, require
from edgedet.runtime.cpu import physical_cores
from edgedet.runtime.metadata import GraphMetadata, graph_format

__all__ = ["OpenVINOBackend", "PRECISIONS", "split_backend"]

# Backend name suffix -> OpenVINO's inference precision hint.
PRECISIONS = {"": "f32", "bf16": "bf16", "f16": "f16"}
_DEVICES = {"cpu": "CPU", "gpu": "GPU"}
_CAPABILITY = {"bf16": "BF16", "f16": "FP16"}


def split_backend(name: str) -> tuple[str, str]:
    """``openvino-bf16`` -> ``("openvino", "bf16")``; other names -> ``(name, "")``."""
    base, _, precision = name.partition("-")
    if base == "openvino" and precision in PRECISIONS:
        return base, precision
    return name, ""


class OpenVINOBackend(Backend):
    """An OpenVINO compiled model on one device, at an explicit inference precision."""

    name = "openvino"

    def __init__(self, path: str | os.PathLike, metadata: GraphMetadata, providers: str | Sequence[str] = "auto",
                 threads: int | None = None, *, precision: str = "") -> None:
        super().__init__(path, metadata)
        ov = require("openvino", 'the openvino backend needs OpenVINO: pip install "edgedet[openvino]"')
        if graph_format(path) != "onnx":
            raise BackendError(f"the openvino backend reads .onnx files, not {self.path.name}")
        if precision not in PRECISIONS:
            raise BackendError(f"unknown OpenVINO precision {precision!r}; choose from "
                               f"{', '.join(p or 'f32' for p in PRECISIONS)}")
        items = [providers] if isinstance(providers, str) else list(providers)
        items = [p.strip().lower() for item in items for p in item.split(",") if p.strip()]
        items = [p for p in items if p != "auto"] or ["cpu"]
        unknown = [p for p in items if p not in _DEVICES]
        if unknown:
            raise BackendError(f"the openvino backend runs on {' or '.join(_DEVICES)}, not {', '.join(unknown)}")
        core = ov.Core()
        available = {d.split(".")[0] for d in core.available_devices}
        usable = [p for p in items if _DEVICES[p] in available]
        if not usable:
            raise BackendUnavailable(f"OpenVINO sees no {' or '.join(_DEVICES[p] for p in items)} device here "
                                     f"(it sees {', '.join(sorted(available)) or 'none'})")
        device = _DEVICES[usable[0]]
        hint = PRECISIONS[precision]
        if precision:
            capabilities = core.get_property(device, "OPTIMIZATION_CAPABILITIES")
            if _CAPABILITY[precision] not in capabilities:
                raise BackendUnavailable(f"this {device} has no {precision} arithmetic "
                                         f"(OpenVINO reports {', '.join(capabilities)})")
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(threads or physical_cores())
        try:
            model = core.read_model(str(self.path))
            self._compiled = core.compile_model(model, device, config)
        except RuntimeError as e:
            raise BackendUnavailable(f"OpenVINO cannot compile {self.path.name}: {_reason(e)}") from None
        # a port may carry several tensor names (ONNX output names and inner aliases)
        ports = {name: port for port in self._compiled.outputs for name in port.get_names()}
        missing = [n for n in self.output_names if n not in ports]
        if missing:
            raise BackendError(f"{self.path.name} has no output {', '.join(missing)} (metadata lists it)")
        self._ports = [ports[n] for n in self.output_names]
        self._request = self._compiled.create_infer_request()
        self._input = self._compiled.inputs[0]
        self.precision = hint
        self.providers = [f"{usable[0]}-{hint}"]

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        result = self._request.infer({self._input: x})
        # copies: the request reuses its output buffers on the next call
        return [np.array(result[port]) for port in self._ports]

    def close(self) -> None:
        self._request = None
        self._compiled = None


def _reason(error: Exception) -> str:
    """The informative line of an OpenVINO exception (it prefixes C++ locations)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (useful or lines or ["unknown error"])[0][:300]
