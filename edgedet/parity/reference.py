"""The PyTorch reference of an exported graph: its model, weights and deploy wrapper, rebuilt from
the graph's metadata (or from ``--weights``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from torch import nn

from edgedet.errors import EdgedetError
from edgedet.export.deploy import NMSSettings, build_deploy_module
from edgedet.models.weights import build_model, resolve_weights
from edgedet.runtime.files import file_digest
from edgedet.runtime.metadata import GraphMetadata

__all__ = ["ParityError", "load_reference_model", "reference_module"]


class ParityError(EdgedetError):
    """The reference of a graph cannot be found or does not fit it."""


def load_reference_model(meta: GraphMetadata, weights: str | None, graph: Path) -> tuple[nn.Module, str]:
    """The model a graph was exported from, and a one-line description of where it came from.

    Without ``weights`` the metadata's source is used: the checkpoint (random-init exports write
    one beside the graph) or darknet file, which must still have the recorded sha256.
    """
    name = meta.model
    config = dict(meta.config)
    if "fully_conv" not in meta.doc:  # a fully-conv graph's input is a frame; the model keeps its window
        config["input_size"] = meta.input.size
    if weights is None:
        source = meta.source
        recorded = source.file
        if not recorded:
            raise ParityError(f"{graph}: its metadata names no source weights; pass --weights")
        path = Path(recorded)
        if not path.is_file():
            raise ParityError(f"{graph}: reference weights {path} recorded in its metadata do not exist; "
                              f"pass --weights")
        if source.sha256 and file_digest(path) != source.sha256:
            raise ParityError(f"{graph}: {path} changed since the export (sha256 differs); pass --weights")
        weights, how = str(path), f"{source.kind} {path} (from the metadata)"
    else:
        how = f"{weights} (--weights)"
    source = resolve_weights(name, weights)
    return build_model(name, source, input_size=tuple(config.pop("input_size")), config=config), how


def reference_module(model: nn.Module, meta: GraphMetadata) -> nn.Module:
    """Eager PyTorch computing what the graph should: same input format, precision and NMS."""
    nms = NMSSettings(**asdict(meta.nms)) if meta.nms else None
    outputs = list(meta.outputs)
    module, names = build_deploy_module(
        model, input_format="uint8" if meta.input.dtype == "uint8" else "float",
        half=meta.precision == "fp16", nms=nms if "num_dets" in outputs else None,
        probs="probs" in outputs, fully_conv="fully_conv" in meta.doc)
    if list(names) != list(outputs):
        raise ParityError(f"the reference gives outputs {list(names)} but the graph declares {outputs}")
    return module
