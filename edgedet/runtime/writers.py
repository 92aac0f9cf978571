"""Where results go: annotated video or images, JSON lines, and a window on screen.

Videos are written under a temporary name beside the target and renamed when finalised, so a
video at the target path is always complete and plays; JSON lines are written to the target
directly and flushed after each frame, so a crash or Ctrl-C loses nothing already processed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgedet.errors import EdgedetError
from edgedet.runtime.files import atomic_path, atomic_write_bytes
from edgedet.runtime.letterbox import letterbox
from edgedet.runtime.sources import IMAGE_SUFFIXES

__all__ = ["OutputError", "DisplayError", "VideoSink", "ImageSink", "JsonlSink", "Display", "check_display",
           "VIDEO_FOURCC", "output_path"]

# Codec per container: MPEG-4 Part 2 plays everywhere and every OpenCV build can write it.
VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


class OutputError(EdgedetError):
    """An output that cannot be written (unsupported suffix, unwritable folder, codec missing)."""


class DisplayError(EdgedetError):
    """``--show`` where there is no display, or an OpenCV build without a GUI."""


def output_path(path: Path, source_id: int, n_sources: int) -> Path:
    """``OUT.mp4`` for a single source, ``OUT_0.mp4``, ``OUT_1.mp4``, ... for several."""
    return path if n_sources == 1 else path.with_name(f"{path.stem}_{source_id}{path.suffix}")


def _check_writable(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"cannot write {path}: folder is not writable")


class VideoSink:
    """An annotated video at ``path``, opened at the first frame with that frame's size.

    Frames of another size (image lists) are letterboxed into the first frame's size.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_FOURCC:
            raise OutputError(f"{self.path}: cannot write video of type {suffix or '(none)'}; "
                              f"use {', '.join(VIDEO_FOURCC)}")
        _check_writable(self.path)
        self.fourcc = VIDEO_FOURCC[suffix]
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (width, height)
        self._writer: cv2.VideoWriter | None = None
        self._tmp_context = None
        self._buffer: np.ndarray | None = None

    def _open(self, width: int, height: int) -> None:
        self._tmp_context = atomic_path(self.path)
        tmp = self._tmp_context.__enter__()
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height))
        if not writer.isOpened():
            self._tmp_context.__exit__(OutputError, None, None)
            self._tmp_context = None
            raise OutputError(f"{self.path}: OpenCV cannot write {self.fourcc} video here")
        self._writer, self.size = writer, (width, height)

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            self._open(image.shape[1], image.shape[0])
        assert self._writer is not None and self.size is not None
        if (image.shape[1], image.shape[0]) != self.size:
            self._buffer, _ = letterbox(image, (self.size[1], self.size[0]), out=self._buffer)
            image = self._buffer
        self._writer.write(image)
        self.frames += 1

    def close(self, keep: bool = True) -> Path | None:
        """Finalise the container and move it into place (``keep``), or throw it away."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        context, self._tmp_context = self._tmp_context, None
        if keep and self.frames:
            context.__exit__(None, None, None)
            return self.path
        context.__exit__(OutputError, None, None)
        return None


class ImageSink:
    """Annotated images: ``path`` itself for a one-frame run, else ``STEM_000001.jpg``, ..."""

    def __init__(self, path: str | os.PathLike, single: bool) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in IMAGE_SUFFIXES:
            raise OutputError(f"{self.path}: not an image type")
        _check_writable(self.path)
        self.single = single
        self.frames = 0
        self.written: list[Path] = []

    def write(self, image: np.ndarray) -> None:
        target = self.path if self.single and not self.frames else \
            self.path.with_name(f"{self.path.stem}_{self.frames + 1:06d}{self.path.suffix}")
        ok, data = cv2.imencode(self.path.suffix, image)
        if not ok:
            raise OutputError(f"{target}: OpenCV cannot encode {self.path.suffix} images")
        atomic_write_bytes(target, data.tobytes())
        self.frames += 1
        self.written.append(target)

    def close(self) -> str:
        """What was written: the one file, or the first and last of the numbered ones."""
        if len(self.written) <= 1:
            return str(self.written[0]) if self.written else ""
        return f"{self.written[0]} ... {self.written[-1].name}"


class JsonlSink:
    """One JSON document per processed frame, flushed as it is written."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        _check_writable(self.path)
        try:
            self._file = open(self.path, "w", encoding="utf-8")
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None
        self.lines = 0

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        self.lines += 1

    def close(self) -> Path:
        if not self._file.closed:
            self._file.flush()
            try:
                os.fsync(self._file.fileno())
            except OSError:
                pass
            self._file.close()
        return self.path


_WINDOW_PROBE = """
import cv2, numpy as np
cv2.namedWindow("edgedet-probe", cv2.WINDOW_NORMAL)
cv2.imshow("edgedet-probe", np.zeros((8, 8, 3), np.uint8))
cv2.waitKey(1)
cv2.destroyAllWindows()
"""


_DISPLAYS_OK: set[tuple[str, str]] = set()  # displays a window was opened on already


def check_display(timeout: float = 20.0) -> None:
    """Raise :class:`DisplayError` when no window can be shown (checked before anything starts).

    Without ``DISPLAY`` / ``WAYLAND_DISPLAY`` there is nothing to show on. With one set, a child
    process opens a window first: OpenCV's GUI toolkit aborts the whole process when the display
    cannot be reached, which must not happen to a run that is saving a video.
    """
    if sys.platform.startswith("linux"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise DisplayError("--show needs a display, and none is available (DISPLAY and WAYLAND_DISPLAY are "
                               "not set); use --save OUT.mp4 instead")
        display = (os.environ.get("DISPLAY", ""), os.environ.get("WAYLAND_DISPLAY", ""))
        if display in _DISPLAYS_OK:
            return
        import subprocess

        try:
            probe = subprocess.run([sys.executable, "-c", _WINDOW_PROBE], capture_output=True, text=True,
                                   timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DisplayError(f"--show: opening a window did not finish within {timeout:g} s") from None
        if probe.returncode != 0:
            lines = [line.strip() for line in probe.stderr.splitlines() if line.strip()]
            reason = next((line for line in lines if "display" in line.lower()), lines[0] if lines else "")
            raise DisplayError(f"--show: OpenCV cannot open a window here ({reason[:160]}); "
                               f"use --save OUT.mp4 instead")
        _DISPLAYS_OK.add(display)


class Display:
    """One OpenCV window; :meth:`show` returns ``False`` once the user asks to stop (q, Esc, close)."""

    def __init__(self, title: str = "edgedet") -> None:
        check_display()
        self.title = title
        self._created = False

    def show(self, image: np.ndarray) -> bool:
        try:
            if not self._created:
                cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
                cv2.resizeWindow(self.title, image.shape[1], image.shape[0])
                self._created = True
            cv2.imshow(self.title, image)
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27):
                return False
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error as e:
            raise DisplayError(f"--show: OpenCV cannot open a window here ({str(e).strip().splitlines()[-1][:160]})") \
                from None

    def close(self) -> None:
        if self._created:
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass
            self._created = False
