"""The PyTorch reference of an exported graph: its model, weights and deploy wrapper, rebuilt from
the graph's metadata (or from ``--weights``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from edgedet.errors import EdgedetError
from edgedet.export.deploy import NMSSettings, build_deploy_module
from edgedet.models.registry import create_model
from edgedet.runtime.files import file_digest
from edgedet.train.checkpoint import load_checkpoint, model_from_checkpoint

__all__ = ["ParityError", "load_reference_model", "reference_module"]


class ParityError(EdgedetError):
    """The reference of a graph cannot be found or does not fit it."""


def _darknet_model(name: str, config: dict[str, Any], path: Path) -> nn.Module:
    from edgedet.models.darknet import load_darknet_weights

    model = create_model(name, **config)
    load_darknet_weights(model, path)
    return model


def load_reference_model(meta: dict[str, Any], weights: str | None, graph: Path) -> tuple[nn.Module, str]:
    """The model a graph was exported from, and a one-line description of where it came from.

    Without ``weights`` the metadata's source is used: the checkpoint (random-init exports write
    one beside the graph) or darknet file, which must still have the recorded sha256.
    """
    name = meta["model"]
    config = dict(meta["config"])
    config["input_size"] = (meta["input"]["height"], meta["input"]["width"])
    if weights is None:
        source = meta.get("source") or {}
        recorded = source.get("checkpoint") or source.get("weights")
        if not recorded:
            raise ParityError(f"{graph}: its metadata names no source weights; pass --weights")
        path = Path(recorded)
        if not path.is_file():
            raise ParityError(f"{graph}: reference weights {path} recorded in its metadata do not exist; "
                              f"pass --weights")
        if source.get("sha256") and file_digest(path) != source["sha256"]:
            raise ParityError(f"{graph}: {path} changed since the export (sha256 differs); pass --weights")
        weights, how = str(path), f"{source.get('kind', 'weights')} {path} (from the metadata)"
    else:
        how = f"{weights} (--weights)"
    path = Path(weights)
    if weights.endswith(".weights"):
        if not path.is_file():
            raise ParityError(f"darknet weights {path} do not exist")
        return _darknet_model(name, config, path).eval(), how
    ckpt = load_checkpoint(path)
    if ckpt["model"] != name:
        raise ParityError(f"{path} holds a {ckpt['model']} checkpoint but {graph} is a {name} graph")
    ckpt = dict(ckpt, config=dict(ckpt["config"], input_size=list(config["input_size"])))
    return model_from_checkpoint(ckpt), how


def reference_module(model: nn.Module, meta: dict[str, Any]) -> nn.Module:
    """Eager PyTorch computing what the graph should: same input format, precision and NMS."""
    nms = NMSSettings(**meta["nms"]) if meta.get("nms") else None
    outputs = meta["outputs"]
    module, names = build_deploy_module(
        model, input_format="uint8" if meta["input"]["dtype"] == "uint8" else "float",
        half=meta.get("precision") == "fp16", nms=nms if "num_dets" in outputs else None,
        probs="probs" in outputs)
    if list(names) != list(outputs):
        raise ParityError(f"the reference gives outputs {list(names)} but the graph declares {outputs}")
    return module
