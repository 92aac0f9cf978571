"""The Python API: load an exported graph, call it on frames, or iterate over a source.

    from edgedet.runtime import load_model

    model = load_model("exported/yolov3-tiny.onnx")
    result = model(frame)                    # a Result: boxes in frame pixels, scores, labels
    for result in model.stream("video.mp4"):  # or "camera0", "rtsp://...", "photos/", "list.txt"
        print(result.frame_index, result.names, result.boxes)

Frames are letterboxed by the graph's metadata rule into a reused buffer, run on the backend, and
the outputs mapped back to source pixels. A model is not thread-safe: use one per thread.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from edgedet.runtime.backends import DEFAULT_SPINNING, Backend, create_backend
from edgedet.runtime.letterbox import Letterbox, letterbox
from edgedet.runtime.masks import check_masks_output
from edgedet.runtime.metadata import GraphFileError, GraphMetadata, read_metadata
from edgedet.runtime.results import Result, check_outputs, decode_outputs
from edgedet.runtime.sources import CaptureGroup, Frame, Source, SourceError, open_sources, read_image
from edgedet.runtime.timing import StageTimes
from edgedet.runtime.tracking import SourceTrackers, check_trackable

__all__ = ["ExportedModel", "load_model"]


class ExportedModel:
    """An exported graph on a backend, with the letterbox and output decoding around it.

    Args:
        backend: a loaded :class:`~edgedet.runtime.backends.Backend`.
        conf: keep detections scoring at least this; ``None`` keeps what the graph's NMS kept
            (raw graphs: 0.25; localizers: 0.5).
    """

    def __init__(self, backend: Backend, conf: float | None = None) -> None:
        self.backend = backend
        self.metadata: GraphMetadata = backend.metadata
        try:
            check_outputs(backend.output_names)
        except ValueError as e:
            raise GraphFileError(f"{backend.path}: {e}") from None
        if self.metadata.masks is not None and "masks" not in backend.output_names:
            raise GraphFileError(f"{backend.path}: the metadata describes instance masks but the graph has no "
                                 f"masks output (outputs: {', '.join(backend.output_names)})")
        self.conf = conf
        self.task: str = self.metadata.task
        self.class_names: tuple[str, ...] = self.metadata.class_names
        self.input_size: tuple[int, int] = backend.input_size
        self.pad_value: tuple[int, ...] = self.metadata.letterbox.pad_value
        self._buffer: np.ndarray | None = None

    @property
    def raw(self) -> bool:
        """The graph has no NMS: detections are unsuppressed candidates."""
        return "predictions" in self.backend.output_names

    @property
    def nms_conf(self) -> float | None:
        """The score threshold baked into the graph's NMS, if any."""
        nms = self.metadata.nms
        return None if nms is None else nms.conf

    def prepare(self, image: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
        """Letterbox one BGR (or grey, or BGRA) frame into ``out`` ``[H, W, 3]`` (reused when given)."""
        if image.ndim == 2 or image.shape[2] == 1:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        return letterbox(image, self.input_size, self.pad_value, out=out)

    def _batch_buffer(self, n: int) -> np.ndarray:
        if self._buffer is None or len(self._buffer) < n:
            self._buffer = np.empty((n, *self.input_size, 3), np.uint8)
        return self._buffer[:n]

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """Letterbox BGR frames into the reused input buffer: ``([B, H, W, 3] uint8, mappings back)``."""
        batch = self._batch_buffer(len(images))
        return batch, [self.prepare(image, out=batch[i])[1] for i, image in enumerate(images)]

    def postprocess(self, outputs: Sequence[np.ndarray], letterboxes: Sequence[Letterbox]) -> list[Result]:
        named = dict(zip(self.backend.output_names, outputs))
        if "masks" in named:
            spec = self.metadata.masks
            try:
                check_masks_output(named["masks"], named["boxes"], self.input_size,
                                   None if spec is None or spec.at_input else spec.resolution)
            except ValueError as e:
                raise GraphFileError(f"{self.backend.path}: {e}") from None
        return [decode_outputs(named, i, lb, self.metadata, self.conf) for i, lb in enumerate(letterboxes)]

    def predict(self, images: Sequence[np.ndarray]) -> list[Result]:
        """Run a batch of BGR frames (any sizes) through the graph; one result per frame."""
        if not len(images):
            return []
        batch, letterboxes = self.preprocess(images)
        return self.postprocess(self.backend.run(batch), letterboxes)

    def __call__(self, image: np.ndarray | str | os.PathLike | Sequence[np.ndarray]) -> Result | list[Result]:
        """One frame (BGR array or image path) -> a :class:`Result`; a list of frames -> a list."""
        if isinstance(image, (str, os.PathLike)):
            frame = read_image(image)
            if frame is None:
                raise SourceError(f"{image}: not a readable image")
            result = self.predict([frame])[0]
            result.source, result.image = str(image), frame
            return result
        if isinstance(image, np.ndarray) and image.ndim in (2, 3):
            result = self.predict([image])[0]
            result.image = image
            return result
        frames = list(image)
        results = self.predict(frames)
        for frame, result in zip(frames, results):
            result.image = frame
        return results

    def stream(self, source: str | Sequence[str] | Sequence[Source], *, batch: int = 1,
               max_frames: int | None = None, vid_stride: int = 1, drop: bool | None = None,
               open_timeout: float = 10.0, reconnect_attempts: int = 5, track: bool = False) -> Iterator[Result]:
        """Results for every frame of a source spec (see :mod:`edgedet.runtime.sources`).

        Each result carries its frame (``result.image``) and where it came from. Stopping the
        iteration early (``break``) stops the capture threads. With ``track`` (detector graphs
        with NMS) each result's ``track_ids`` hold its detections' track ids, per source.
        """
        trackers = None
        if track:
            check_trackable(self.metadata, self.backend.path)
            trackers = SourceTrackers()
        if isinstance(source, (str, os.PathLike)) or (source and not isinstance(source[0], Source)):
            sources = open_sources(source, vid_stride=vid_stride, open_timeout=open_timeout,
                                   reconnect_attempts=reconnect_attempts)
        else:
            sources = list(source)
        group = CaptureGroup(sources, drop=drop, batch=batch, prepare=self.prepare)
        results = self.process(group, batch=batch, max_frames=max_frames)
        yield from results if trackers is None else trackers.track(results)

    def process(self, group: CaptureGroup, *, batch: int = 1, max_frames: int | None = None,
                times: StageTimes | None = None, stop: threading.Event | None = None) -> Iterator[Result]:
        """Run a capture group to its end (or ``max_frames``, or ``stop``): inference on this thread.

        Give the group ``prepare=model.prepare`` so frames are letterboxed on the capture threads,
        overlapping with inference; otherwise they are letterboxed here.
        """
        batch = max(1, int(batch))
        processed = 0
        group.start()
        try:
            while max_frames is None or processed < max_frames:
                if stop is not None and stop.is_set() and not group.stop_event.is_set():
                    group.stop()  # stop reading; what is already queued is still processed
                want = batch if max_frames is None else min(batch, max_frames - processed)
                frames = group.get(want, wait_full=not group.live)
                if frames is None:
                    break
                if not frames:
                    if group.stopped_and_drained():
                        break
                    continue
                try:
                    results = self._run_frames(frames, times)
                finally:
                    group.release(frames)
                for result in results:
                    processed += 1
                    yield result
        finally:
            group.close()

    def _run_frames(self, frames: list[Frame], times: StageTimes | None) -> list[Result]:
        t0 = time.perf_counter()
        if all(f.input is not None and f.input.shape[:2] == self.input_size for f in frames):
            # Letterboxed on the capture threads already: only gather the batch.
            if len(frames) == 1:
                batch = frames[0].input[None]
            else:
                batch = self._batch_buffer(len(frames))
                for i, frame in enumerate(frames):
                    batch[i] = frame.input
            letterboxes = [f.letterbox for f in frames]
        else:
            batch, letterboxes = self.preprocess([f.image for f in frames])
        t1 = time.perf_counter()
        outputs = self.backend.run(batch)
        t2 = time.perf_counter()
        results = self.postprocess(outputs, letterboxes)
        for frame, result in zip(frames, results):
            result.image, result.source, result.source_id = frame.image, frame.source, frame.source_id
            result.frame_index, result.timestamp = frame.index, frame.timestamp
        t3 = time.perf_counter()
        if times is not None:
            for frame in frames:
                times.add("read", frame.read_ms)
            times.add("preprocess", (t1 - t0) * 1e3 + sum(f.prepare_ms for f in frames))
            times.add("inference", (t2 - t1) * 1e3)
            times.add("postprocess", (t3 - t2) * 1e3)
        return results

    def close(self) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        h, w = self.input_size
        return (f"ExportedModel({self.metadata.model!r}, task={self.task!r}, input={h}x{w}, "
                f"backend={self.backend.name!r}, providers={self.backend.providers})")


def load_model(path: str | os.PathLike, *, backend: str = "auto", providers: str | Sequence[str] = "auto",
               conf: float | None = None, threads: int | None = None, batch: int = 1,
               spinning: str = DEFAULT_SPINNING) -> ExportedModel:
    """Load an exported ``.onnx`` or ``.torchscript`` graph for inference.

    Args:
        path: the exported graph.
        backend: ``auto``, ``onnxruntime``, ``torchscript`` or ``opencv``.
        providers: ONNX Runtime providers, ``auto`` or e.g. ``"cuda,cpu"``.
        conf: score threshold on top of the graph's (see :class:`ExportedModel`).
        threads: CPU threads for the backend (default: physical cores).
        batch: the largest batch that will be run (sizes TensorRT's optimisation profile).
        spinning: ONNX Runtime's idle intra-op threads: ``off``, ``in-run`` or ``on`` (see
            :func:`edgedet.runtime.backends.create_backend`).
    """
    metadata = read_metadata(Path(path))
    return ExportedModel(create_backend(path, backend, providers, threads, max_batch=batch, metadata=metadata,
                                        spinning=spinning), conf=conf)
