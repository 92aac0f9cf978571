"""From a source spec (camera index, file, folder, glob, stream URL, ``.txt`` list) to sources;
special files (FIFOs, sockets, devices) refused up front."""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path
from typing import Callable, Iterable

import cv2

from edgedet.runtime.sources.base import IMAGE_SUFFIXES, STREAM_SCHEMES, Source, SourceError
from edgedet.runtime.sources.images import ImageSource
from edgedet.runtime.sources.video import VideoSource


_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"))


def _special_file(path: Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder (``a FIFO``, ...), else ``None``.

    Opening a FIFO or a socket blocks until a writer appears, so such paths are refused up front.
    """
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror or e})") from None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((what for test, what in _SPECIAL_FILES if test(mode)), "not a file or folder")


def _camera_index(spec: str) -> int | None:
    text = spec.strip().lower()
    if text.startswith("camera"):
        text = text[len("camera"):]
        return int(text) if text.isdigit() else (0 if text == "" else None)
    return int(text) if text.isdigit() else None


def _has_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def parse_source(spec: str, *, vid_stride: int = 1, open_timeout: float = 10.0,
                 reconnect_attempts: int = 5, warn: Callable[[str], None] | None = None,
                 _depth: int = 0, _base: Path | None = None) -> list[Source]:
    """Turn a source spec into (unopened) sources; a ``.txt`` list gives several.

    A path that is not a regular file or a folder (a FIFO, a socket, a device other than a
    ``/dev/video*`` camera) is a :class:`SourceError`: reading it could block forever.
    """
    spec = str(spec).strip()
    if not spec:
        raise SourceError("empty source")
    video = dict(vid_stride=vid_stride, open_timeout=open_timeout, reconnect_attempts=reconnect_attempts,
                 warn=warn)
    index = _camera_index(spec)
    if index is not None and not Path(spec).exists():
        return [VideoSource(index, "camera", f"camera{index}", **video)]
    if spec.lower().startswith(STREAM_SCHEMES):
        return [VideoSource(spec, "stream", spec, **video)]
    path = Path(os.path.expanduser(spec))
    if _base is not None and not path.is_absolute():
        path = _base / path
    if _has_glob(spec) and not path.exists():
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        images = [p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not images:
            raise SourceError(f"{spec}: no images match")
        return [ImageSource(images, spec)]
    if not path.exists():
        raise SourceError(f"{spec} does not exist (give a camera index, a video, an image, a folder, "
                          f"a glob, a stream URL or a .txt list)")
    special = _special_file(path)
    if special == "a character device" and path.name.startswith("video"):
        return [VideoSource(str(path), "camera", str(path), **video)]  # a V4L2 camera by its device path
    if special is not None:
        raise SourceError(f"{spec} is not a regular file ({special})")
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise SourceError(f"{path}: no images in this folder ({', '.join(IMAGE_SUFFIXES[:5])}, ...)")
        return [ImageSource(images, str(path))]
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if _depth > 0:
            raise SourceError(f"{path}: a source list cannot name another list")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SourceError(f"{path}: cannot read source list ({e})") from None
        entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not entries:
            raise SourceError(f"{path}: the source list is empty")
        sources: list[Source] = []
        for entry in entries:
            sources += parse_source(entry, vid_stride=vid_stride, open_timeout=open_timeout,
                                    reconnect_attempts=reconnect_attempts, warn=warn, _depth=_depth + 1,
                                    _base=path.parent)
        return sources
    if suffix in IMAGE_SUFFIXES:
        return [ImageSource([path], str(path))]
    return [VideoSource(str(path), "video", str(path), **video)]


def open_sources(spec: str | Iterable[str], *, vid_stride: int = 1, open_timeout: float = 10.0,
                 reconnect_attempts: int = 5, warn: Callable[[str], None] | None = None) -> list[Source]:
    """Parse and open every source of ``spec``; on any failure the opened ones are closed again.

    ``warn`` receives one line per reconnect attempt of a live source (see :class:`VideoSource`).
    """
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    sources: list[Source] = []
    for item in specs:
        sources += parse_source(str(item), vid_stride=vid_stride, open_timeout=open_timeout,
                                reconnect_attempts=reconnect_attempts, warn=warn)
    opened: list[Source] = []
    try:
        for source in sources:
            source.open()
            opened.append(source)
    except BaseException:
        for source in opened:
            source.close()
        raise
    return sources


def quiet_video_logs() -> None:
    """Silence OpenCV's and FFmpeg's console messages (failed camera probes, stream hiccups):
    the runtime reports what matters itself."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # builds without the logging bindings
        pass
