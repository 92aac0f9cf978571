"""Where frames come from: cameras, video files, images, network streams, and lists of them.

A source spec is one of ``camera0`` / ``camera1`` / a bare index ``0``, a video file, an image
file, a folder or glob of images, an ``rtsp://`` / ``rtmp://`` / ``http(s)://`` stream OpenCV can
open (MJPEG, HLS, ...), or a ``.txt`` file listing any of these, one per line.

Each source is read on its own thread into a bounded queue (:class:`CaptureGroup`). Live sources
(cameras, streams) keep the newest frames and count what they drop, so inference always sees the
present; files never drop. Network streams that stall or end reconnect with backoff; a corrupt
frame is skipped and counted. Opening is bounded in time: a camera, stream or video file that
does not open is a :class:`SourceError`, never a hang, and a FIFO or socket is refused up front.
"""

from __future__ import annotations

import collections
import glob
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from edgedet.errors import EdgedetError
from edgedet.runtime.letterbox import Letterbox

__all__ = ["SourceError", "Frame", "Source", "ImageSource", "VideoSource", "CaptureGroup", "open_sources",
           "parse_source", "read_image", "quiet_video_logs", "wait_unless_stopped", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES",
           "STREAM_SCHEMES"]

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


def wait_unless_stopped(seconds: float, stop: threading.Event | None) -> bool:
    """Sleep ``seconds``, or less when ``stop`` is set meanwhile; ``True`` when it was."""
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)


def _open_bounded(factory: Callable[[], cv2.VideoCapture], timeout: float) -> cv2.VideoCapture | None:
    """``factory()`` run on a helper thread; ``None`` when it has not returned within ``timeout``.

    Camera drivers, FFmpeg's network and file probes can block in open; waiting on a thread keeps
    the caller bounded and interruptible (Ctrl-C reaches the waiting thread). A capture that
    arrives after the caller gave up is released by the helper.
    """
    box: list[cv2.VideoCapture | None] = []
    lock = threading.Lock()
    abandoned = threading.Event()

    def target() -> None:
        try:
            cap = factory()
        except Exception:  # an OpenCV build that raises instead of returning a closed capture
            cap = None
        with lock:
            if abandoned.is_set():
                if cap is not None and hasattr(cap, "release"):
                    cap.release()
                return
            box.append(cap)

    thread = threading.Thread(target=target, daemon=True, name="open-source")
    thread.start()
    thread.join(timeout)
    with lock:
        if box:
            return box[0]
        abandoned.set()
        return None


class VideoSource(Source):
    """A video file, a camera or a network stream, read with ``cv2.VideoCapture``.

    Every open (and reopen) runs under ``open_timeout``. A live source that is lost (stream
    stalled past the read timeout, connection closed, camera unplugged) is reopened with backoff:
    the delay starts at ``backoff`` and doubles up to 8 s, and after ``reconnect_attempts``
    attempts without a healthy connection the source is given up (``error`` says why). A
    connection counts as healthy once it has delivered frames for longer than ``open_timeout``
    (the read timeout); only then do the attempt counter and the delay start over. So a server
    that sends a few frames and then stalls on every connection is given up after
    ``reconnect_attempts`` reconnects instead of being retried forever at the first delay.

    Args:
        target: a file path, a camera index (or device path) or a stream URL.
        kind: ``video``, ``camera`` or ``stream``.
        vid_stride: keep every ``vid_stride``-th frame (the others are grabbed, not decoded to BGR).
        open_timeout: seconds to wait for a source to open (and a stream to give a frame).
        reconnect_attempts: how often a lost stream or camera is reopened before it is given up;
            ``0`` ends it at the first failure.
        backoff: the first reconnect delay in seconds.
        wait: how a backoff delay is waited out, ``(seconds, stop event or None) -> stopped``;
            :func:`wait_unless_stopped` unless a caller (a test) wants to see the delays asked for.
        warn: called with one line per reconnect attempt (the run prints them as ``warning:``).
        clock: monotonic seconds, to tell how long a connection has been delivering frames.
    """

    def __init__(self, target: str | int, kind: str, name: str, vid_stride: int = 1, open_timeout: float = 10.0,
                 reconnect_attempts: int = 5, backoff: float = 0.5,
                 wait: Callable[[float, threading.Event | None], bool] = wait_unless_stopped,
                 warn: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name)
        self.target = target
        self.kind = kind
        self.live = kind in ("camera", "stream")
        self.vid_stride = max(1, int(vid_stride))
        self.open_timeout = open_timeout
        self.reconnect_attempts = reconnect_attempts
        self.backoff = backoff
        self._wait = wait
        self._warn = warn
        self._clock = clock
        self._cap: cv2.VideoCapture | None = None
        # Reconnect state; it starts over only when a connection has proved healthy.
        self._attempts = 0  # reconnect attempts since the last healthy connection
        self._delay = backoff  # the next backoff delay
        self._unhealthy = 0  # connections in a row lost before they became healthy
        self._connected_at = 0.0
        self._connection_frames = 0
        self._position = 0  # frames consumed from the capture (read or grabbed)
        self._skip = 0  # frames to grab before the next one kept (--vid-stride)
        self._total: int | None = None

    def _new_capture(self) -> cv2.VideoCapture | None:
        """A new capture, or ``None`` when opening did not finish within ``open_timeout``."""
        ms = int(self.open_timeout * 1000)
        target = self.target
        if self.kind == "stream":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            # FFmpeg bounds its own open and probe reads (each ``open_timeout``); the thread is
            # the backstop for what it does not bound (name resolution, a stuck demuxer).
            return _open_bounded(lambda: cv2.VideoCapture(str(target), cv2.CAP_FFMPEG, params),
                                 2 * self.open_timeout + 1)
        if self.kind == "camera":
            device = target if isinstance(target, str) else int(target)
            return _open_bounded(lambda: cv2.VideoCapture(device), self.open_timeout)
        return _open_bounded(lambda: cv2.VideoCapture(str(target)), self.open_timeout)

    def _connected(self, cap: cv2.VideoCapture) -> None:
        self._cap = cap
        self._connected_at = self._clock()
        self._connection_frames = 0

    def open(self) -> None:
        cap = self._new_capture()
        if cap is None and self.kind != "stream":
            raise SourceError(f"{self.name}: did not open within {self.open_timeout:g} s")
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            if self.kind == "camera":
                raise SourceError(f"no camera at index {self.target} (cannot open {self.name})")
            if self.kind == "stream":
                raise SourceError(f"cannot open stream {self.name} (unreachable, not a video stream, "
                                  f"or no answer within {self.open_timeout:g} s)")
            raise SourceError(f"{self.name}: not a readable video file")
        self._connected(cap)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if 0 < fps < 1000 else None
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frame_size = (w, h) if w > 0 and h > 0 else None
        if self.kind == "video":
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if total > 0:
                self._total = total
                self.length = -(-total // self.vid_stride)

    def _reopen(self, stop: threading.Event | None) -> bool:
        """Reconnect a lost source with exponential backoff; ``False`` when it stays lost.

        The attempts and the delay carry over from earlier losses until a connection has been
        healthy (see the class docstring), so reconnects that each give a few frames and stall
        again still run out.
        """
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._unhealthy += 1
        why = f"lost after {_plural(self._connection_frames, 'frame')} on this connection"
        while self._attempts < self.reconnect_attempts:
            delay = self._delay
            self._attempts += 1
            self._delay = min(delay * 2, 8.0)
            if self._warn is not None:
                self._warn(f"{self.name}: {why}; reconnecting in {delay:g} s "
                           f"(attempt {self._attempts} of {self.reconnect_attempts})")
            if self._wait(delay, stop):
                return False
            cap = self._new_capture()
            if cap is not None and cap.isOpened():
                self._connected(cap)
                self.reconnects += 1
                return True
            if cap is not None:
                cap.release()
            why = "reconnect failed"
        if self.reconnects and self._unhealthy > 1:
            self.error = (f"{self.name}: the stream stalled or dropped on every connection "
                          f"({self._unhealthy} in a row, each before delivering frames for "
                          f"{self.open_timeout:g} s); "
                          f"gave up after {self.reconnect_attempts} reconnect attempts")
        else:
            self.error = f"{self.name}: lost, and {self.reconnect_attempts} reconnect attempts failed"
        return False

    def _read_one(self, decode: bool) -> tuple[bool, np.ndarray | None]:
        assert self._cap is not None
        self._position += 1
        if decode:
            return self._cap.read()
        return self._cap.grab(), None

    def read(self, stop: threading.Event | None = None) -> Frame | None:
        failures = 0
        while self._cap is not None:
            if stop is not None and stop.is_set():
                return None
            start = time.perf_counter()
            # Frames 0, N, 2N, ... are kept: the ones between are grabbed (no BGR conversion).
            while self._skip > 0:
                self._skip -= 1
                if not self._read_one(decode=False)[0]:
                    break
            ok, image = self._read_one(decode=True)
            read_ms = (time.perf_counter() - start) * 1e3
            if ok and image is not None and image.size and image.ndim in (2, 3):
                if image.ndim == 2 or image.shape[2] != 3:
                    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 or image.shape[2] == 1
                                         else cv2.COLOR_BGRA2BGR)
                self.frames_read += 1
                self._connection_frames += 1
                if self.live and self._unhealthy and self._clock() - self._connected_at > self.open_timeout:
                    # This connection has delivered frames for longer than a stall takes to
                    # detect: the losses before it are history.
                    self._attempts, self._delay, self._unhealthy = 0, self.backoff, 0
                self._skip = self.vid_stride - 1
                index = self._position - 1
                if self.live:
                    timestamp = time.time()
                else:
                    timestamp = index / self.fps if self.fps else None
                return Frame(image, index, timestamp, self.name, read_ms=read_ms)
            if ok:  # the capture gave something that is not an image
                self.corrupt += 1
                failures += 1
                if failures < 100:
                    continue
                self.error = f"{self.name}: {failures} unusable frames in a row"
                return None
            if self.kind == "video":
                # A failed read before the known end is a corrupt frame; at the end, the end.
                failures += 1
                position = int(self._cap.get(cv2.CAP_PROP_POS_FRAMES))
                if self._total and position < self._total - 1 and failures < 16:
                    self.corrupt += 1
                    continue
                return None
            # A live source that stops (network drop, stall past the read timeout, camera
            # unplugged) is reopened with backoff before it is given up.
            if self._reopen(stop):
                continue
            return None
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


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


class _Capture:
    """One source's reader thread and its queue (guarded by the group's condition)."""

    def __init__(self, source: Source, source_id: int, drop: bool, maxsize: int) -> None:
        self.source = source
        self.source_id = source_id
        self.drop = drop
        self.maxsize = maxsize
        self.frames: collections.deque[Frame] = collections.deque()
        self.dropped = 0
        self.waits = 0  # times the queue was full and the reader waited for the consumer
        self.finished = False
        self.thread: threading.Thread | None = None


class CaptureGroup:
    """Reads every source on its own thread into a bounded queue; :meth:`get` takes frames round-robin.

    Args:
        sources: opened sources.
        drop: keep only the newest frames when the consumer falls behind (``None``: live sources
            drop, files never do; ``False`` never drops).
        batch: frames the consumer takes at once. A dropping source buffers ``batch`` frames
            (the newest); others ``2 * batch + 2``, so reading runs ahead of inference.
        prepare: ``(image, buffer or None) -> (network input, Letterbox)``, run on the capture
            thread so letterboxing overlaps with inference. Input buffers are recycled: give
            them back with :meth:`release` once the frames have run.
    """

    Prepare = Callable[[np.ndarray, "np.ndarray | None"], "tuple[np.ndarray, Letterbox]"]

    def __init__(self, sources: Sequence[Source], drop: bool | None = None, batch: int = 1,
                 prepare: Prepare | None = None) -> None:
        self.stop_event = threading.Event()
        self.prepare = prepare
        self._free: list[np.ndarray] = []  # recycled input buffers
        self._cond = threading.Condition()
        self._captures = []
        batch = max(1, int(batch))
        for i, source in enumerate(sources):
            drops = source.live if drop is None else (drop and source.live)
            self._captures.append(_Capture(source, i, drops, batch if drops else 2 * batch + 2))
        self._turn = 0
        self.errors: list[str] = []

    @property
    def sources(self) -> list[Source]:
        return [c.source for c in self._captures]

    @property
    def live(self) -> bool:
        return any(c.source.live for c in self._captures)

    @property
    def dropped(self) -> int:
        """Frames live sources discarded because the consumer was behind."""
        return sum(c.dropped for c in self._captures)

    @property
    def waits(self) -> int:
        """Times a source that never drops found its queue full and waited for the consumer."""
        return sum(c.waits for c in self._captures)

    @property
    def queued(self) -> int:
        """Frames read and not yet taken."""
        with self._cond:
            return self._ready()

    def wait_until(self, condition: Callable[[], bool], timeout: float | None = None) -> bool:
        """Block until ``condition()`` holds, checked whenever a reader queues, drops or waits for
        room, or a source ends; ``False`` when ``timeout`` passes first."""
        with self._cond:
            return self._cond.wait_for(condition, timeout)

    def start(self) -> "CaptureGroup":
        """Start the reader threads (once; later calls do nothing)."""
        if any(c.thread is not None for c in self._captures):
            return self
        for capture in self._captures:
            capture.thread = threading.Thread(target=self._reader, args=(capture,), daemon=True,
                                              name=f"capture-{capture.source_id}")
            capture.thread.start()
        return self

    def _reader(self, capture: _Capture) -> None:
        source = capture.source
        try:
            while not self.stop_event.is_set():
                frame = source.read(self.stop_event)
                if frame is None:
                    break
                frame.source_id = capture.source_id
                if self.prepare is not None:
                    start = time.perf_counter()
                    with self._cond:
                        buffer = self._free.pop() if self._free else None
                    frame.input, frame.letterbox = self.prepare(frame.image, buffer)
                    frame.prepare_ms = (time.perf_counter() - start) * 1e3
                with self._cond:
                    if len(capture.frames) >= capture.maxsize:
                        if capture.drop:
                            stale = capture.frames.popleft()  # the consumer is behind: keep the present
                            capture.dropped += 1
                            if stale.input is not None:
                                self._free.append(stale.input)
                        else:
                            capture.waits += 1
                            self._cond.notify_all()
                            self._cond.wait_for(lambda: len(capture.frames) < capture.maxsize
                                                or self.stop_event.is_set())
                            if self.stop_event.is_set():
                                break
                    capture.frames.append(frame)
                    self._cond.notify_all()
        except Exception as e:  # a reader must never die silently
            self.errors.append(f"{source.name}: {type(e).__name__}: {e}")
        finally:
            source.close()
            if source.error:
                self.errors.append(source.error)
            with self._cond:
                capture.finished = True
                self._cond.notify_all()

    def _ready(self) -> int:
        return sum(len(c.frames) for c in self._captures)

    def _all_done(self) -> bool:
        return all(c.finished and not c.frames for c in self._captures)

    def get(self, n: int, wait_full: bool = False, timeout: float = 0.1) -> list[Frame] | None:
        """Up to ``n`` frames, round-robin over the sources; ``[]`` on timeout; ``None`` at the end.

        With ``wait_full``, waits until ``n`` frames are ready (or every source has ended), so
        file batches are full; otherwise returns as soon as one frame is ready.
        """
        need = n if wait_full else 1
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._ready() >= need or all(c.finished for c in self._captures)
                or (self.stop_event.is_set() and self._ready() > 0), timeout)
            if not ok:
                return []
            if self._all_done():
                return None
            out: list[Frame] = []
            while len(out) < n and self._ready():
                capture = self._captures[self._turn % len(self._captures)]
                self._turn += 1
                if capture.frames:
                    out.append(capture.frames.popleft())
            self._cond.notify_all()
            return out

    def release(self, frames: Iterable[Frame]) -> None:
        """Hand the frames' input buffers back for reuse (after inference has read them)."""
        with self._cond:
            for frame in frames:
                if frame.input is not None:
                    self._free.append(frame.input)
                    frame.input = None

    def stop(self) -> None:
        """Stop reading; frames already queued can still be taken."""
        self.stop_event.set()
        with self._cond:
            self._cond.notify_all()

    def stopped_and_drained(self) -> bool:
        with self._cond:
            return self.stop_event.is_set() and self._ready() == 0

    def join(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for capture in self._captures:
            if capture.thread is not None:
                capture.thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self.stop()
        self.join()
        for capture in self._captures:
            if capture.thread is None or not capture.thread.is_alive():
                capture.source.close()


def quiet_video_logs() -> None:
    """Silence OpenCV's and FFmpeg's console messages (failed camera probes, stream hiccups):
    the runtime reports what matters itself."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # builds without the logging bindings
        pass

