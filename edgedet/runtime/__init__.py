"""The torch-free runtime: what goes onto an edge device next to numpy, OpenCV and ONNX Runtime.

Nothing in this package imports torch at module level (a test enforces it); the rest of edgedet
may use its numpy helpers, never the reverse.

    from edgedet.runtime import load_model

    model = load_model("exported/yolov3-tiny.onnx")          # ONNX Runtime, best usable provider
    result = model(frame)                                    # boxes in frame pixels, scores, labels
    for result in model.stream("rtsp://camera/stream"):      # camera0, video, images, streams
        ...
"""

from edgedet.runtime.api import ExportedModel, load_model
from edgedet.runtime.backends import Backend, BackendError, ProviderWarning, create_backend
from edgedet.runtime.results import Result
from edgedet.runtime.sources import Frame, SourceError, open_sources

__all__ = ["load_model", "ExportedModel", "Result", "create_backend", "Backend", "BackendError",
           "ProviderWarning", "open_sources", "Frame", "SourceError"]
