"""OpenCV DNN: OpenCV's own importer runs the ``.onnx`` file (CUDA target when OpenCV was built with it).

OpenCV implements a subset of ONNX: the graph is run once on a blank frame when loading, so a
graph it cannot run fails with a clear error rather than on the first real frame.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from edgedet.runtime.backends.base import Backend, BackendError, BackendUnavailable
from edgedet.runtime.backends.providers import resolve_providers, short_name
from edgedet.runtime.metadata import GraphMetadata, graph_format

__all__ = ["OpenCVBackend"]


class OpenCVBackend(Backend):
    """OpenCV's DNN module reading the ONNX file (CUDA target when OpenCV was built with it)."""

    name = "opencv"

    def __init__(self, path: str | os.PathLike, metadata: GraphMetadata, providers: str | Sequence[str] = "auto",
                 threads: int | None = None) -> None:
        super().__init__(path, metadata)
        import cv2

        self._cv2 = cv2
        if graph_format(path) != "onnx":
            raise BackendError(f"the opencv backend reads .onnx files, not {self.path.name}")
        wanted, auto = resolve_providers(providers)
        short = [short_name(p) for p in wanted]
        cuda_built = hasattr(cv2, "cuda") and cv2.cuda.getCudaEnabledDeviceCount() > 0
        use_cuda = cuda_built and (auto or "cuda" in short)
        if not auto and "cuda" in short and not cuda_built and "cpu" not in short:
            raise BackendUnavailable("cuda was requested but this OpenCV build has no CUDA support")
        if not auto and not set(short) & {"cuda", "cpu"}:
            raise BackendError(f"the opencv backend runs on cuda or cpu, not {', '.join(short)}")
        if threads:
            cv2.setNumThreads(threads)
        try:
            self.net = cv2.dnn.readNetFromONNX(str(self.path))
        except cv2.error as e:
            raise BackendUnavailable(f"OpenCV DNN cannot read {self.path.name}: {_cv_reason(e)}; "
                               f"use --backend onnxruntime") from None
        if use_cuda:
            self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
        self.providers = ["cuda" if use_cuda else "cpu"]
        blank = np.full((1, *self.input_size, 3), metadata.letterbox.pad_value[0], np.uint8)
        try:
            self.run(blank)
        except cv2.error as e:
            raise BackendUnavailable(f"OpenCV DNN reads {self.path.name} but cannot run it: {_cv_reason(e)}; "
                               f"use --backend onnxruntime") from None

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        self.net.setInput(x, self.metadata.input.name)
        out = self.net.forward(list(self.output_names))
        return [np.asarray(o) for o in out]

    def close(self) -> None:
        self.net = None


def _cv_reason(error: Exception) -> str:
    """The informative part of an OpenCV error (its message starts with the C++ location)."""
    text = str(error)
    detail = [line.lstrip("> ").strip() for line in text.splitlines() if line.lstrip().startswith(">")]
    if detail:
        return re.sub(r",\s*where$", "", detail[0])[:300]
    match = re.search(r"error: \(-?\d+:[^)]*\) (.*?)(?: in function '.*|$)", text)
    if match and match.group(1).strip():
        return match.group(1).strip()[:300]
    return (text.strip().splitlines() or ["unknown error"])[0][:300]
