"""What every source shares: the frame record, the source interface, the suffixes that tell
files apart, and the one image decoder (which never raises)."""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from edgedet.errors import EdgedetError
from edgedet.runtime.letterbox import Letterbox


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".jp2")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                  ".mjpeg", ".mjpg", ".gif", ".3gp")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class SourceError(EdgedetError):
    """A source that does not exist, cannot be opened, or gives no frames."""


@dataclass
class Frame:
    """One frame as read: the BGR image and where it came from."""

    image: np.ndarray  # uint8 [h, w, 3] BGR
    index: int  # frame number in its source (counting skipped frames of --vid-stride)
    timestamp: float | None  # seconds into a video file; wall-clock time for live sources
    source: str  # the source's name (for images, the image's path)
    source_id: int = 0  # position of the source in the run
    read_ms: float = 0.0
    # Set when the capture group prepares frames for a model (on the capture thread):
    input: np.ndarray | None = field(default=None, repr=False)  # the letterboxed network input
    letterbox: Letterbox | None = None  # how ``image`` maps into ``input``
    prepare_ms: float = 0.0


class Source:
    """Base of every source: a name, counters, and ``read()`` until it returns ``None``."""

    kind: str = ""
    live: bool = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.frames_read = 0
        self.corrupt = 0
        self.reconnects = 0
        self.error: str | None = None  # why a source ended early (a stream lost for good)
        self.fps: float | None = None
        self.frame_size: tuple[int, int] | None = None  # (width, height) when known
        self.length: int | None = None  # frames read() will give, when known

    def open(self) -> None:
        """Open the source; raises :class:`SourceError` within a bounded time."""

    def read(self, stop: threading.Event | None = None) -> Frame | None:
        """The next frame, or ``None`` at the end (or when ``stop`` is set)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        parts = [self.kind]
        if self.frame_size:
            parts.append(f"{self.frame_size[0]}x{self.frame_size[1]}")
        if self.fps:
            parts.append(f"{self.fps:g} fps")
        if self.length is not None:
            parts.append(f"{self.length} frame{'s' if self.length != 1 else ''}")
        return f"{self.name} ({', '.join(parts)})"


def read_image(path: str | os.PathLike) -> np.ndarray | None:
    """An image file as uint8 BGR ``[h, w, 3]``, or ``None`` when it cannot be decoded.

    Never raises for a bad file: a header that declares more pixels than OpenCV's limit
    (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2**30 by default) makes ``cv2.imdecode`` raise ``cv2.error``,
    and an image too large for memory a ``MemoryError``; both are an unreadable image here. Only
    regular files are read (a FIFO named like an image would block).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        data = np.fromfile(str(path), dtype=np.uint8)  # unlike cv2.imread, any path encoding works
    except (OSError, ValueError):
        return None
    if data.size == 0:
        return None
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except (cv2.error, MemoryError):
        return None
    if image is None or image.size == 0:
        return None
    return image
