"""What every runtime backend shares: the :class:`Backend` interface and the graph's input contract.

Every backend takes a batch of letterboxed uint8 BGR frames ``[B, H, W, 3]`` (the graph's input
contract, checked here once for all backends) and returns the graph's outputs as numpy arrays in
the order of the metadata's ``outputs``. Graphs exported with ``--input float`` are fed
``[B, 3, H, W]`` RGB in 0..1, converted here, so callers never need to know.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgedet.errors import EdgedetError, MissingDependencyError
from edgedet.runtime.metadata import GraphMetadata

__all__ = ["Backend", "BackendError", "BackendUnavailable", "ProviderWarning", "require"]


class BackendError(EdgedetError):
    """A backend or execution provider that cannot run the graph."""


class BackendUnavailable(BackendError):
    """The backend or execution provider cannot run here (not installed, no GPU, a build without
    the provider, an operator set it does not implement); another machine may run the graph.
    Parity checks report these as skipped and any other failure as a failure."""


class ProviderWarning(UserWarning):
    """An execution provider was skipped, or part of the graph runs on a slower one."""


def require(module: str, message: str) -> Any:
    """Import ``module`` (lazily: the runtime must load without torch), or say what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(message) from None  # also "cannot run here" for parity


class Backend:
    """One loaded graph. Subclasses set the attributes and implement :meth:`_run`.

    Attributes:
        name: ``onnxruntime``, ``torchscript`` or ``opencv``.
        providers: what actually runs the graph, e.g. ``["CUDAExecutionProvider",
            "CPUExecutionProvider"]`` or ``["cpu"]``.
        output_names: the graph's outputs, in the metadata's ``outputs`` order.
        metadata: the graph's edgedet metadata.
        notes: what happened while loading (providers skipped, nodes on the CPU), one line each;
            each was also issued as a :class:`ProviderWarning`.
    """

    name: str = ""
    providers: list[str]
    output_names: tuple[str, ...]

    def __init__(self, path: str | os.PathLike, metadata: GraphMetadata) -> None:
        self.path = Path(path)
        self.metadata = metadata
        self.output_names = metadata.outputs
        if not self.output_names:
            raise BackendError(f"{self.path}: metadata lists no outputs")
        self.float_input = metadata.input.dtype != "uint8"
        self.notes: list[str] = []

    @property
    def input_size(self) -> tuple[int, int]:
        """The network input ``(height, width)`` the graph was exported at."""
        return self.metadata.input.size

    def check_input(self, images: np.ndarray) -> None:
        """Raise ``ValueError`` unless ``images`` fit the graph: uint8 ``[B, H, W, 3]``, ``B >= 1``,
        ``(H, W)`` the exported size (graphs with a dynamic size: a multiple of its size multiple)."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"expected uint8 [B, H, W, 3] frames, got {images.dtype} {list(images.shape)}")
        batch, h, w = images.shape[:3]
        if batch < 1:
            raise ValueError("expected a batch of at least one frame, got none")
        spec = self.metadata.input
        if spec.dynamic_size:
            step = max(1, spec.size_multiple)
            if h % step or w % step:
                raise ValueError(f"expected frames whose height and width are multiples of {step}, got {h}x{w}")
        elif (h, w) != spec.size:
            raise ValueError(f"expected {spec.height}x{spec.width} frames (the graph's input size), got {h}x{w}")

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """Letterboxed uint8 BGR frames ``[B, H, W, 3]`` -> the graph's outputs as numpy arrays."""
        images = np.asarray(images)
        self.check_input(images)
        if self.float_input:
            # The graph's float contract: RGB, channels first, 0..1.
            x = np.ascontiguousarray(images[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
            x *= 1.0 / 255.0
        else:
            x = np.ascontiguousarray(images)
        return self._run(x)

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def _note(self, message: str) -> None:
        self.notes.append(message)
        warnings.warn(message, ProviderWarning, stacklevel=3)

    def close(self) -> None:
        """Release the session; the backend cannot run afterwards."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, providers={self.providers})"
