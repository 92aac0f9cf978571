"""Cameras, video files and network streams through OpenCV: opening bounded in time and
interruptible, reconnecting with backoff, giving up with a reason."""

from __future__ import annotations

import threading
import time
from typing import Callable

import cv2
import numpy as np

from edgedet.runtime.sources.base import Frame, Source, SourceError


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
