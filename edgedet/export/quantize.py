"""INT8 static quantisation of exported ONNX graphs with ONNX Runtime's quantiser.

Convolutions (and matrix products) get int8 weights, per output channel, and uint8 activations
in QDQ form, calibrated on frames of the model's dataset pushed through the graph's own input
(uint8 BGR, letterboxed as the runtime does). Preprocessing, decoding and NMS stay float, so the
graph keeps its input/output contract.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from edgedet.errors import EdgedetError
from edgedet.runtime.files import atomic_path

__all__ = ["QuantizeError", "calibration_frames", "quantize_int8"]


class QuantizeError(EdgedetError):
    """Calibration data or options that cannot quantise a graph."""


def calibration_frames(spec: str, count: int, size: tuple[int, int]) -> np.ndarray:
    """``count`` training frames of dataset ``spec``, letterboxed to ``size``: uint8 ``[N, H, W, 3]``."""
    from edgedet.data import build_dataset
    from edgedet.runtime.letterbox import letterbox

    dataset = build_dataset(spec, split="train")
    if len(dataset) == 0:
        raise QuantizeError(f"calibration dataset {spec} is empty")
    frames = []
    for i in range(min(count, len(dataset))):
        image = dataset[i]["image"]
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        frames.append(letterbox(image, size)[0])
    return np.stack(frames)


class _Reader:
    """ONNX Runtime's calibration reader protocol over a frame array, one frame per batch."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames
        self._it: Iterator[np.ndarray] = iter(frames)

    def get_next(self) -> dict[str, np.ndarray] | None:
        frame = next(self._it, None)
        return None if frame is None else {"images": frame[None]}

    def rewind(self) -> None:
        self._it = iter(self.frames)


def quantize_int8(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, frames: np.ndarray,
                  per_channel: bool = True) -> Path:
    """Write an int8 (QDQ) copy of an fp32 ONNX graph calibrated on ``frames``; metadata kept."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgedet.runtime.metadata import METADATA_KEY, read_metadata

    meta = read_metadata(fp32_path)
    int8_path = Path(int8_path)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and graph optimisation first, as ONNX Runtime's quantiser recommends.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(str(prepared), str(quantized), _Reader(frames), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                        calibrate_method=CalibrationMethod.MinMax)
        graph = onnx.load(str(quantized))
    import json

    quantization = {"format": "QDQ", "weights": "int8 per-channel" if per_channel else "int8",
                    "activations": "uint8", "calibration_frames": int(len(frames)), "method": "MinMax"}
    doc = dict(meta.doc, precision="int8", quantization=quantization)
    del graph.metadata_props[:]
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(doc, sort_keys=True)
    with atomic_path(int8_path) as tmp_out:
        onnx.save(graph, str(tmp_out))
    return int8_path
