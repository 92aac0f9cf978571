"""Image files read in order, one frame each; an unreadable one is skipped and counted."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from edgedet.runtime.sources.base import Frame, Source, SourceError, read_image


class ImageSource(Source):
    """Image files read in order; an unreadable one is skipped and counted as corrupt."""

    kind = "images"

    def __init__(self, paths: Sequence[Path], name: str) -> None:
        super().__init__(name)
        self.paths = list(paths)
        self.length = len(self.paths)
        self._next = 0
        self._first: np.ndarray | None = None
        self._first_ms = 0.0

    def open(self) -> None:
        if not self.paths:
            raise SourceError(f"{self.name}: no images found")
        if len(self.paths) == 1:
            # A single image that cannot be read is a user error, not a skipped frame.
            start = time.perf_counter()
            image = read_image(self.paths[0])
            if image is None:
                raise SourceError(f"{self.paths[0]}: not a readable image")
            self._first, self._first_ms = image, (time.perf_counter() - start) * 1e3
            self.frame_size = (image.shape[1], image.shape[0])

    def read(self, stop: threading.Event | None = None) -> Frame | None:
        while self._next < len(self.paths):
            if stop is not None and stop.is_set():
                return None
            index, path = self._next, self.paths[self._next]
            self._next += 1
            start = time.perf_counter()
            if self._first is not None:
                image, self._first = self._first, None
                start -= self._first_ms / 1e3
            else:
                image = read_image(path)
            if image is None:
                self.corrupt += 1
                continue
            self.frames_read += 1
            if self.frame_size is None:
                self.frame_size = (image.shape[1], image.shape[0])
            return Frame(image, index, None, str(path), read_ms=(time.perf_counter() - start) * 1e3)
        return None
