"""The one checkpoint format shared by every family, and its only loader.

A checkpoint is a ``torch.save`` file holding plain data and tensors only::

    {"format": "edgedet-checkpoint", "format_version": 1, "edgedet_version": "0.1.0",
     "model": "yolov3-tiny", "config": {...config fields...}, "class_names": [...],
     "input": {"channels": 3, "height": 416, "width": 416, "layout": "NCHW", "color": "rgb"},
     "state_dict": {...}, "train": {...epoch, metrics, optimizer state...}}

Loading uses ``torch.load(weights_only=True)``: a file that would execute code when unpickled is
refused with a :class:`CheckpointError`, never run.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgedet import __version__
from edgedet.errors import CheckpointError, ModelError
from edgedet.models.layers import class_names_of
from edgedet.models.registry import create_model, get_entry
from edgedet.runtime.files import atomic_path

__all__ = ["save_checkpoint", "load_checkpoint", "model_from_checkpoint", "FORMAT", "FORMAT_VERSION"]

FORMAT = "edgedet-checkpoint"
FORMAT_VERSION = 1


def input_spec(cfg: Any) -> dict[str, Any]:
    """What the network expects: channels, size, layout and colour order of its float input."""
    return {"channels": cfg.in_channels, "height": cfg.input_size[0], "width": cfg.input_size[1],
            "layout": "NCHW", "color": "grey" if cfg.in_channels == 1 else "rgb", "range": [0.0, 1.0]}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, train: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (made by ``create_model``) and optional training state atomically."""
    cfg = model.cfg
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "edgedet_version": __version__,
        "model": model.model_name,
        "config": dataclasses.asdict(cfg),
        "class_names": list(class_names_of(cfg)),
        "input": input_spec(cfg),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train": train or {},
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def _not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` is some other edgedet input rather than a checkpoint, or None."""
    suffix = path.suffix.lower()
    torchscript = suffix == ".torchscript"
    if not torchscript and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                torchscript = any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
        except (OSError, zipfile.BadZipFile):
            pass
    if suffix == ".onnx" or torchscript:
        return (f"{path} is an exported graph, not a checkpoint: compare it with PyTorch with "
                f"`edgedet parity {path}`, run it with `edgedet run --model {path}`")
    if suffix == ".weights":
        return (f"{path} is a darknet .weights file, not an edgedet checkpoint: `edgedet export` and "
                f"`edgedet train` take it with --weights")
    return None


def _torch_reason(e: BaseException) -> str:
    """The gist of torch's refusal, without its advice to load with ``weights_only=False`` (we never do)."""
    text = str(e).replace("WeightsUnpickler error:", "\n\n")
    advice = ("weights_only", "Weights only load failed", "Check the documentation", "Please file an issue")
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    facts = [p for p in paragraphs if p and not any(a in p for a in advice)]
    return facts[0].split(". ")[0].rstrip(".") if facts else type(e).__name__


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint without executing anything stored in it."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    reason = _not_a_checkpoint(path)
    if reason:
        raise CheckpointError(reason)
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol chatter would precede our one line
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refusing to load {path}: it is not plain tensors and data (loading it could run "
                              f"code stored in the file; edgedet never does): {_torch_reason(e)}") from None
    except Exception as e:  # torch's unpickler fails with assorted types on corrupt bytes
        raise CheckpointError(f"{path} is not a readable checkpoint: {_torch_reason(e)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an edgedet checkpoint (no '{FORMAT}' format tag)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {ckpt['format_version']}; this edgedet "
                              f"({__version__}) reads up to {FORMAT_VERSION}")
    for key in ("model", "config", "state_dict"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks '{key}'")
    return ckpt


def model_from_checkpoint(source: str | os.PathLike | dict[str, Any]) -> nn.Module:
    """Rebuild the model a checkpoint (path or loaded dict) describes and load its weights."""
    ckpt = source if isinstance(source, dict) else load_checkpoint(source)
    where = "checkpoint" if isinstance(source, dict) else str(source)
    try:
        entry = get_entry(ckpt["model"])
        fields = {f.name for f in dataclasses.fields(entry.config)}
        config = {k: v for k, v in ckpt["config"].items() if k in fields}
        model = create_model(ckpt["model"], **config)
    except ModelError as e:
        raise CheckpointError(f"{where}: {e}") from None
    try:
        missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as e:  # shape mismatches
        first = str(e).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{where}: weights do not fit {ckpt['model']}: {first}") from None
    if missing or unexpected:
        raise CheckpointError(f"{where}: weights do not fit {ckpt['model']} "
                              f"(missing {len(missing)} tensors, e.g. {missing[:2]}; "
                              f"unexpected {len(unexpected)}, e.g. {unexpected[:2]})")
    return model.eval()
