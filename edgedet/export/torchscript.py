"""TorchScript export: runs under ``torch.jit.load`` with no torchvision (edge libtorch has none).

The value-independent part of a model (preprocessing, network, decoding) is traced; the
data-dependent detector post-processing (NMS in plain torch operators) is scripted around it, so
batch size and, for dynamic graphs, image size stay free.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from edgedet.export.deploy import DeployDetector
from edgedet.runtime.files import atomic_path
from edgedet.runtime.metadata import TORCHSCRIPT_EXTRA_FILE

__all__ = ["to_torchscript", "export_torchscript"]


def to_torchscript(module: nn.Module, example: Tensor) -> torch.jit.ScriptModule:
    """Compile a deploy wrapper: trace its dense part, script detector post-processing."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice and tracer warnings
        if isinstance(module, DeployDetector):
            # type(module): a detector subclass (the instance segmenter) keeps its own outputs.
            traced = type(module)(torch.jit.trace(module.dense, example), module.post)
            return torch.jit.script(traced)
        return torch.jit.trace(module, example)


def export_torchscript(module: nn.Module, example: Tensor, path: str | os.PathLike,
                       metadata: dict[str, Any]) -> Path:
    """Write ``module`` as TorchScript atomically, with metadata as the extra file ``edgedet.json``."""
    scripted = to_torchscript(module, example)
    extra = {TORCHSCRIPT_EXTRA_FILE: json.dumps(metadata, sort_keys=True)}
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(scripted, str(tmp), _extra_files=extra)
    return path
