"""TorchScript: an exported ``.torchscript`` file under ``torch.jit.load``, on CUDA when available.

torch is imported only when this backend is chosen, so the ONNX path never needs it.
"""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np

from edgedet.runtime.backends.base import Backend, BackendError, BackendUnavailable, require
from edgedet.runtime.backends.providers import resolve_providers, short_name
from edgedet.runtime.metadata import GraphMetadata

__all__ = ["TorchScriptBackend"]


class TorchScriptBackend(Backend):
    """A TorchScript file under ``torch.jit.load``, on CUDA when available (torch imported here only)."""

    name = "torchscript"

    def __init__(self, path: str | os.PathLike, metadata: GraphMetadata, providers: str | Sequence[str] = "auto",
                 threads: int | None = None) -> None:
        super().__init__(path, metadata)
        self._torch = torch = require("torch", "the torchscript backend needs PyTorch, which the runtime-only "
                                               "install leaves out: pip install 'edgedet[full]', or run the .onnx file")
        wanted, auto = resolve_providers(providers)
        if auto:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            short = [short_name(p) for p in wanted]
            device = next((d for d in short if d in ("cuda", "cpu")), None)
            if device is None:
                raise BackendError(f"the torchscript backend runs on cuda or cpu, not {', '.join(short)}")
            if device == "cuda" and not torch.cuda.is_available():
                if "cpu" not in short:
                    raise BackendUnavailable("cuda was requested but torch.cuda.is_available() is false here")
                device = "cpu"
        if threads:
            torch.set_num_threads(threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            try:
                self.module = torch.jit.load(str(self.path), map_location=device).eval()
            except Exception as e:
                raise BackendError(f"{self.path}: torch.jit.load cannot read it ({str(e).splitlines()[0][:200]})") \
                    from None
        self.device = torch.device(device)
        self.providers = [device]

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x).to(self.device))
        out = out if isinstance(out, (list, tuple)) else [out]
        return [t.detach().cpu().numpy() for t in out]

    def close(self) -> None:
        self.module = None
