"""Reading several sources at once: a thread and a bounded queue per source, frames taken in
turn; live sources keep the newest frames and count what they drop."""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Iterable, Sequence

import numpy as np

from edgedet.runtime.letterbox import Letterbox
from edgedet.runtime.sources.base import Frame, Source


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
