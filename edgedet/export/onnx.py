"""ONNX export: the deploy wrapper traced into standard ONNX operators, NMS as NonMaxSuppression.

ONNX's ``NonMaxSuppression`` takes a batch dimension, so the exported NMS is one operator over the
whole batch: any batch size gives each image what it gives alone, with no per-image loop unrolled
at export time. Its semantics are those of :func:`edgedet.ops.nms.nms_indices`, which is what the
eager and TorchScript paths run.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from edgedet.export.compat import export_onnx_torchscript, paused_tracing
from edgedet.export.deploy import NMSSettings
from edgedet.ops.nms import nms_indices, selection_order
from edgedet.runtime.files import atomic_path
from edgedet.runtime.metadata import METADATA_KEY

__all__ = ["DEFAULT_OPSET", "OnnxNMS", "export_onnx"]

# Opset 17: LayerNormalization-era operators that ONNX Runtime's CPU, CUDA and TensorRT providers
# all implement; the graph needs nothing newer (NonMaxSuppression is opset 10+, ScatterND 11+).
DEFAULT_OPSET = 17
MIN_OPSET = 11


class _NonMaxSuppression(torch.autograd.Function):
    """Runs :func:`nms_indices` in torch and exports as ONNX ``NonMaxSuppression``."""

    @staticmethod
    def forward(ctx: Any, boxes: Tensor, scores: Tensor, max_per_class: int, iou: float,
                conf: float) -> Tensor:
        # The exporter only keeps this Function's symbolic; pause the tracer so it does not also
        # record every step of the Python NMS loop (which made export ~10x slower).
        with paused_tracing():
            return nms_indices(boxes, scores, max_per_class, iou, conf)

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, max_per_class: int, iou: float, conf: float) -> Any:
        return g.op(
            "NonMaxSuppression", boxes, scores,
            g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([conf], dtype=torch.float32)),
            center_point_box_i=0,
        )


class OnnxNMS(nn.Module):
    """Drop-in for :class:`edgedet.export.deploy.TorchNMS` that exports as one ONNX operator."""

    def __init__(self, settings: NMSSettings) -> None:
        super().__init__()
        self.settings = settings

    def forward(self, boxes: Tensor, scores: Tensor) -> Tensor:
        s = self.settings
        selected = _NonMaxSuppression.apply(boxes, scores, s.max_det, s.iou, s.conf)
        return selected[selection_order(selected, scores, stable=False)]


def export_onnx(module: nn.Module, example: Tensor, path: str | os.PathLike, output_names: Sequence[str],
                metadata: dict[str, Any], dynamic_hw: bool, opset: int = DEFAULT_OPSET,
                simplify: bool = True) -> Path:
    """Trace ``module`` on ``example`` and write a checked ONNX file atomically.

    The batch axis is always dynamic; ``dynamic_hw`` frees height and width too. ``metadata`` is
    stored as one JSON document under the ``edgedet`` key of ``metadata_props``. With
    ``simplify``, onnxslim folds constants and removes redundant nodes; the caller's parity check
    decides whether the simplified graph is kept (see :func:`edgedet.export.api.export_model`).
    """
    import onnx

    input_axes = {0: "batch"}
    if dynamic_hw:
        input_axes.update({1: "height", 2: "width"} if example.dtype == torch.uint8 else {2: "height", 3: "width"})
    dynamic_axes = {"images": input_axes}
    for name in output_names:
        if name == "mask":
            dynamic_axes[name] = {0: "batch", **({1: "height", 2: "width"} if dynamic_hw else {})}
        elif name == "masks":
            dynamic_axes[name] = {0: "batch", **({2: "height", 3: "width"} if dynamic_hw else {})}
        elif name == "probs":
            dynamic_axes[name] = {0: "batch", **({2: "height", 3: "width"} if dynamic_hw else {})}
        elif name in ("predictions", "coefficients"):
            dynamic_axes[name] = {0: "batch", 1: "candidates"} if dynamic_hw else {0: "batch"}
        elif name == "prototypes":
            dynamic_axes[name] = {0: "batch", **({2: "proto_height", 3: "proto_width"} if dynamic_hw else {})}
        else:
            dynamic_axes[name] = {0: "batch"}
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about data-dependent NMS shapes
        with torch.no_grad():
            export_onnx_torchscript(module, example, tmp, opset=opset, input_names=["images"],
                                    output_names=output_names, dynamic_axes=dynamic_axes)
        graph = onnx.load(str(tmp))
        if simplify:
            graph = _simplified(graph)
        graph.producer_name = "edgedet"
        del graph.metadata_props[:]
        entry = graph.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
        onnx.checker.check_model(graph, full_check=True)
        onnx.save(graph, str(tmp))
    return path


def _simplified(graph: Any) -> Any:
    import onnxslim

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return onnxslim.slim(graph)
