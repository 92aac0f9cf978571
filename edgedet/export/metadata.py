"""The metadata document every exported graph carries (read back by :mod:`edgedet.runtime.metadata`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from edgedet import __version__
from edgedet.export.deploy import NMSSettings
from edgedet.models.layers import class_names_of
from edgedet.models.registry import get_entry

__all__ = ["LETTERBOX_RULE", "build_metadata"]

# How frames become network inputs; the runtime implements exactly this rule, and any other
# consumer can reproduce it: scale to fit keeping the aspect ratio (up or down), centre, pad.
LETTERBOX_RULE = {
    "method": "letterbox",
    "keep_aspect": True,
    "scaleup": True,
    "center": True,
    "pad_value": [114, 114, 114],
    "interpolation": {"shrink": "area", "enlarge": "linear"},  # OpenCV INTER_AREA, INTER_LINEAR
}


def build_metadata(model: nn.Module, *, imgsz: tuple[int, int], input_format: str, dynamic: bool,
                   half: bool, nms: NMSSettings | None, output_names: tuple[str, ...],
                   source: dict[str, Any], export_args: dict[str, Any], graph_format: str,
                   fully_conv: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a consumer needs to feed the graph and read its outputs.

    ``fully_conv`` (``{"window": [h, w], "stride": s, "dataset": ...}``) marks a graph exported with
    ``--fully-conv``: its task is ``detection``, it takes any size of at least the window, its size
    multiple is the stride (the pools then tile the frame exactly), and the document records the
    geometry under ``fully_conv``; ``config`` stays the original model's.
    """
    entry = get_entry(model.model_name)
    task = "detection" if fully_conv else entry.task
    multiple = fully_conv["stride"] if fully_conv else _size_multiple(model)
    cfg = model.cfg
    names = list(class_names_of(cfg))
    uint8 = input_format == "uint8"
    doc: dict[str, Any] = {
        "schema": 1,  # the document layout; edgedet.runtime.metadata.SCHEMA_VERSION reads it
        "edgedet_version": __version__,
        "format": graph_format,
        "model": model.model_name,
        "family": entry.family,
        "task": task,
        "class_names": names,
        "num_classes": cfg.num_classes,
        "input": {
            "name": "images",
            "layout": "NHWC" if uint8 else "NCHW",
            "dtype": "uint8" if uint8 else "float32",
            "color": "BGR" if uint8 else "RGB",
            "height": imgsz[0],
            "width": imgsz[1],
            "dynamic_batch": True,
            "dynamic_size": dynamic,
            "size_multiple": multiple,
        },
        "normalization": {
            "scale": 1 / 255 if uint8 else 1.0,
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "network_channels": "grey" if cfg.in_channels == 1 else "RGB",
            "grey_weights_bgr": [0.114, 0.587, 0.299] if cfg.in_channels == 1 else None,
        },
        "letterbox": dict(LETTERBOX_RULE, stride=multiple),
        "outputs": list(output_names),
        "precision": "fp16" if half else "fp32",
        "nms": nms.to_dict() if nms is not None and task == "detection" else None,
        "config": _plain(dataclasses.asdict(cfg)),
        "source": source,
        "export_args": export_args,
    }
    doc.update(entry.spec.metadata(model))  # family extras: strides and anchors, grid, ...
    if "masks" not in output_names:  # the mask contract describes a ``masks`` output (not --no-nms)
        doc.pop("masks", None)
    if fully_conv:
        doc["fully_conv"] = _plain(fully_conv)
    if entry.task == "segmentation":
        doc["segmentation"] = {"background": 0, "ignore": 255, "class_names": names}
    return doc


def _size_multiple(model: nn.Module) -> int:
    return get_entry(model.model_name).spec.size_multiple(model.cfg)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
