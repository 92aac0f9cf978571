"""Where results go: annotated video or images, JSON lines, and a window on screen.

Every output is written through :class:`edgedet.runtime.files.PendingFile`: under a temporary
name beside the target, renamed into place when the run finishes or is interrupted and
finalised (Ctrl-C, SIGTERM). A run that fails leaves an existing file as it was, and a second
run writing the same video or JSON lines fails at once (a lock beside the target) instead of
interleaving records. Temporaries left by a killed run are removed by the next run of the same
output.

Running out of space: OpenCV's video writer does not report it, so the sink checks the device
after every frame and proves the finished container opens before renaming it; a video that hit a
full disk is never renamed into place. The JSON lines are cut back to the last complete record
and kept (each record is true and complete; only the ones after the disk filled are missing),
and the run ends with :class:`DiskFullError`, saying what was kept.
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
from edgedet.runtime.files import (
    DiskFullError,
    OutputError,
    PendingFile,
    atomic_write_bytes,
    check_writable_file,
    disk_is_full,
    is_disk_full_error,
)
from edgedet.runtime.letterbox import letterbox
from edgedet.runtime.sources import IMAGE_SUFFIXES

__all__ = ["OutputError", "DiskFullError", "DisplayError", "VideoSink", "ImageSink", "JsonlSink", "Display",
           "check_display", "VIDEO_FOURCC", "output_path"]

# Codec per container: MPEG-4 Part 2 plays everywhere and every OpenCV build can write it.
VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


class DisplayError(EdgedetError):
    """``--show`` where there is no display, or an OpenCV build without a GUI."""


def output_path(path: Path, source_id: int, n_sources: int) -> Path:
    """``OUT.mp4`` for a single source, ``OUT_0.mp4``, ``OUT_1.mp4``, ... for several."""
    return path if n_sources == 1 else path.with_name(f"{path.stem}_{source_id}{path.suffix}")


_write = os.write  # one system call per record (tests replace it to fill the disk)


def _disk_full(path: Path) -> DiskFullError:
    return DiskFullError(f"no space left on device writing {path}")


def _playable(path: Path, frames: int) -> bool:
    """Whether OpenCV can open the finished container and it holds the frames written."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened() or not capture.read()[0]:
            return False
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))  # some containers only estimate it
        return count <= 0 or abs(count - frames) <= 1 + frames // 50
    finally:
        capture.release()


class VideoSink:
    """An annotated video at ``path``, opened at the first frame with that frame's size.

    Frames of another size (image lists) are letterboxed into the first frame's size. The target
    is locked and its temporary reserved at construction, so a clash fails before any work.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_FOURCC:
            raise OutputError(f"{self.path}: cannot write video of type {suffix or '(none)'}; "
                              f"use {', '.join(VIDEO_FOURCC)}")
        check_writable_file(self.path)
        self.fourcc = VIDEO_FOURCC[suffix]
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (width, height)
        self._writer: cv2.VideoWriter | None = None
        self._buffer: np.ndarray | None = None
        self._pending: PendingFile | None = PendingFile(self.path, lock=True)

    def _open(self, width: int, height: int) -> None:
        assert self._pending is not None
        writer = cv2.VideoWriter(str(self._pending.tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps,
                                 (width, height))
        if not writer.isOpened():
            if disk_is_full(self.path.parent):
                raise _disk_full(self.path)
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
        if disk_is_full(self.path.parent):  # OpenCV drops what it cannot write without a word
            raise _disk_full(self.path)
        self.frames += 1

    def close(self) -> Path | None:
        """Finalise the container and rename it into place; None when no frame was written.

        Raises :class:`DiskFullError` or :class:`OutputError` (and renames nothing) when the disk
        filled up or the finished container does not open.
        """
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if not self.frames:
            pending.discard()
            return None
        if disk_is_full(self.path.parent):
            pending.discard()
            raise _disk_full(self.path)
        if not _playable(pending.tmp, self.frames):
            pending.discard()
            raise OutputError(f"{self.path}: the finished video does not open; nothing was written")
        return pending.commit()

    def discard(self) -> None:
        """Throw the video away; an existing file at ``path`` stays as it was."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.discard()


class ImageSink:
    """Annotated images: ``path`` itself for a one-frame run, else one file per frame named by the
    frame's index in the JSON lines (``"frame"``, from 0): ``STEM_000000.jpg``, ...; with several
    sources the source's index too: ``STEM_s1_000000.jpg``."""

    def __init__(self, path: str | os.PathLike, single: bool, sources: int = 1) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in IMAGE_SUFFIXES:
            raise OutputError(f"{self.path}: not an image type")
        check_writable_file(self.path)
        self.single = single
        self.sources = sources
        self.frames = 0
        self.written: list[Path] = []

    def write(self, image: np.ndarray, frame: int | None = None, source: int = 0) -> None:
        """Write one annotated frame; ``frame`` is its index in its source (default: the count so far)."""
        index = self.frames if frame is None else frame
        tag = f"_s{source}" if self.sources > 1 else ""
        target = self.path if self.single and not self.frames else \
            self.path.with_name(f"{self.path.stem}{tag}_{index:06d}{self.path.suffix}")
        ok, data = cv2.imencode(self.path.suffix, image)
        if not ok:
            raise OutputError(f"{target}: OpenCV cannot encode {self.path.suffix} images")
        atomic_write_bytes(target, data.tobytes(), clean=False)
        self.frames += 1
        self.written.append(target)

    def close(self) -> str:
        """What was written: the one file, or the first and last of the numbered ones."""
        if len(self.written) <= 1:
            return str(self.written[0]) if self.written else ""
        return f"{self.written[0]} ... {self.written[-1].name}"


class JsonlSink:
    """One JSON document per processed frame, each written whole with one system call.

    The lines go to a temporary file that :meth:`close` renames onto ``path``; :meth:`discard`
    (a failed run) leaves an existing ``path`` as it was. When the disk fills up mid-record the
    temporary is cut back to the last complete line, :class:`DiskFullError` is raised, and
    :meth:`close` still keeps the complete lines.

    A ``path`` that exists and is not a regular file (a FIFO, ``/dev/stdout``) is written
    directly: lines reach the reader as they are processed.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._pending: PendingFile | None = None
        try:
            if self.path.exists() and not self.path.is_file():
                self._fd: int | None = os.open(self.path, os.O_WRONLY)
            else:
                check_writable_file(self.path)
                self._pending = PendingFile(self.path, lock=True)
                self._fd = os.open(self._pending.tmp, os.O_WRONLY | os.O_TRUNC)
        except OSError as e:
            if self._pending is not None:
                self._pending.discard()
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None
        self.lines = 0
        self._complete = 0  # bytes of complete lines
        self.full = False

    def write(self, record: dict[str, Any]) -> None:
        if self._fd is None or self.full:
            raise OutputError(f"{self.path} is closed")
        encoded = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        data = memoryview(encoded)
        try:
            while data:
                data = data[_write(self._fd, data):]
        except OSError as e:
            if self._pending is not None:
                os.ftruncate(self._fd, self._complete)  # never leave a record cut in half
                os.lseek(self._fd, self._complete, os.SEEK_SET)
            if is_disk_full_error(e):
                self.full = True
                raise _disk_full(self.path) from None
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._complete += len(encoded)
        self.lines += 1

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def close(self) -> Path | None:
        """Rename the lines written so far (complete lines only) onto ``path``; None when there
        are none (a run that read no frame leaves an existing file as it was)."""
        self._close_fd()
        pending, self._pending = self._pending, None
        if pending is not None:
            if not self.lines:
                pending.discard()
                return None
            pending.commit()
        return self.path

    def discard(self) -> None:
        """Throw the lines away; an existing file at ``path`` stays as it was."""
        self._close_fd()
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.discard()


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
