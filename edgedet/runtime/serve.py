"""The live view of ``edgedet run --serve HOST:PORT``: a small HTTP server beside the pipeline.

Routes: ``/`` a page (static HTML + JS, no external files: the edge box may be offline) showing
the stream, FPS, stage timings, per-class counts, tracks and the latest detections, polling the
two JSON routes twice a second; ``/stream.mjpg`` the annotated frames as multipart MJPEG;
``/api/latest`` the latest frame's record, exactly the JSON line ``--save-json`` writes for it;
``/api/summary`` the run summary so far (the summary's fields plus ``running``).

Decisions:

- The standard library's :class:`~http.server.ThreadingHTTPServer` on a daemon thread, one
  thread per client. No web framework: the edge install stays numpy + OpenCV + ONNX Runtime.
- Everything is lazy, so a run nobody watches pays one lock and one reference per frame: the
  pipeline publishes the result and the frame it already has (drawn, when ``--save``/``--show``
  drew it; else the raw frame, which the capture side allocates afresh for every frame). Drawing,
  JPEG encoding and the JSON record are made on the client's thread when a client asks, and a
  frame's JPEG is shared by all clients (two asking at the same moment may both make it).
- A client is sent the newest frame each time it is ready for one; frames published while it was
  busy are skipped for it, so a slow client sees fewer frames and never holds the pipeline or
  queues frames. A client that stops reading for :data:`CLIENT_TIMEOUT` seconds is dropped;
  clients that go away (broken pipe, reset) are forgotten quietly.
- The server binds when :class:`LiveView` is made, before any source is opened, so a port in
  use or a host that cannot be bound is one ``error:`` line before any frame.
- With several sources the stream shows each frame as it comes (the sources interleave);
  ``/stream.mjpg?source=N`` shows source N only.
- Per-class counts on the page are those of the latest frame (what is in view); the summary
  counts detections and tracks over the whole run.
- The URL is printed once on stderr, when the pipeline starts (every route answers in full then).
  When a finite source ends, the server ends with the run; with ``--serve-linger`` it keeps
  serving the last frame and the final summary (``"running": false``) until Ctrl-C or SIGTERM,
  and the exit code stays 0 (the run had finished). A signal during the run stops run and server
  together, with the run's usual exit codes (130, 143).
- No authentication: it listens on 127.0.0.1 unless the user names another address.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from edgedet.errors import EdgedetError
from edgedet.runtime.draw import draw_status

__all__ = ["ServeError", "LiveView", "parse_bind", "DEFAULT_HOST", "CLIENT_TIMEOUT"]

DEFAULT_HOST = "127.0.0.1"  # only this machine, unless the user names another address
CLIENT_TIMEOUT = 10.0  # seconds a client may stall a send before it is dropped
JPEG_QUALITY = 80
BOUNDARY = "edgedetframe"
REPEAT_AFTER = 1.0  # seconds without a new frame after which a stream client is sent the last one again


class ServeError(EdgedetError):
    """A ``--serve`` address that is malformed or cannot be bound."""


def parse_bind(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` -> ``(host, port)``; host defaults to 127.0.0.1.

    IPv6 hosts are written in brackets (``[::1]:8080``). Port 0 asks the system for a free port
    (the URL printed at the start says which).
    """
    text = value.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ServeError(f"--serve {value!r}: write an IPv6 host as [ADDRESS]:PORT")
        port_text = rest[1:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ServeError(f"--serve {value!r}: write an IPv6 host as [ADDRESS]:PORT")
    else:
        host, port_text = "", text
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ServeError(f"--serve {value!r}: expected HOST:PORT, :PORT or PORT with a port from 0 to 65535")
    if any(c.isspace() or c in "/?#@" for c in host):
        raise ServeError(f"--serve {value!r}: {host!r} is not a host name or address")
    return host or DEFAULT_HOST, int(port_text)


@dataclasses.dataclass
class _Frame:
    """One published frame: its result, its image, and whether the image is drawn already."""

    seq: int
    result: Any  # edgedet.runtime.results.Result
    image: np.ndarray | None
    drawn: bool
    fps: float
    jpeg: bytes | None = None
    record: dict[str, Any] | None = None


def _page() -> bytes:
    return resources.files("edgedet.runtime").joinpath("live_view.html").read_bytes()


class LiveView:
    """The server. The pipeline calls :meth:`publish` for every frame and :meth:`finish` at the end.

    Args:
        host, port: where to listen (port 0: any free port; see :attr:`url`).
        summary: called (on a client's thread) for the run summary so far, as a dict.
    """

    def __init__(self, host: str, port: int, summary: Callable[[], dict[str, Any]] | None = None) -> None:
        self.summary = summary or (lambda: {})
        self.clients = 0  # connected stream clients
        self._cond = threading.Condition()
        self._latest: _Frame | None = None
        self._per_source: dict[int, _Frame] = {}
        self._seq = 0
        self._final: dict[str, Any] | None = None
        self._closing = threading.Event()
        try:
            self._server = _Server((host, port), _handler(self))
        except (OSError, OverflowError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
                reason = "the port is in use"
            raise ServeError(f"--serve {_join(host, port)}: cannot listen there ({reason})") from None
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="live-view", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::", "") else socket.gethostname()
        return f"http://{_join(host, self.port)}/"

    def publish(self, result, image: np.ndarray | None, drawn: bool, fps: float) -> None:
        """The pipeline's one call per frame: keep references, wake the stream clients."""
        with self._cond:
            self._seq += 1
            frame = _Frame(self._seq, result, image, drawn, fps)
            self._latest = self._per_source[result.source_id] = frame
            self._cond.notify_all()

    def finish(self, summary: dict[str, Any]) -> None:
        """The run ended: ``/api/summary`` gives the final ``summary`` from now on."""
        self._final = dict(summary, running=False)

    def close(self) -> None:
        """Stop serving: stream clients are ended and the port is released."""
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # ---- on the clients' threads ----

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Counts a stream client in :attr:`clients` while it is connected."""
        with self._cond:
            self.clients += 1
        try:
            yield
        finally:
            with self._cond:
                self.clients -= 1

    def latest(self, source: int | None = None) -> _Frame | None:
        with self._cond:
            return self._latest if source is None else self._per_source.get(source)

    def record(self) -> dict[str, Any] | None:
        frame = self.latest()
        if frame is None:
            return None
        if frame.record is None:
            frame.record = frame.result.to_dict()
        return frame.record

    def summary_now(self) -> dict[str, Any]:
        return self._final if self._final is not None else dict(self.summary(), running=True)

    def next_frame(self, after: int, source: int | None, timeout: float = 0.5) -> _Frame | None:
        """The newest frame later than ``after`` (waiting up to ``timeout``), or None."""
        with self._cond:
            self._cond.wait_for(lambda: self._closing.is_set() or self._newer(after, source), timeout)
            return self._newer(after, source)

    def _newer(self, after: int, source: int | None) -> _Frame | None:
        frame = self._latest if source is None else self._per_source.get(source)
        return frame if frame is not None and frame.seq > after and frame.image is not None else None

    @staticmethod
    def jpeg(frame: _Frame) -> bytes:
        """The frame drawn (if the pipeline did not draw it) and JPEG-encoded; made once per frame."""
        if frame.jpeg is None:
            image = frame.image
            if not frame.drawn:
                image = frame.result.plot(image, copy=True)
                draw_status(image, f"{frame.fps:.1f} FPS")
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise ValueError("OpenCV could not encode the frame as JPEG")
            frame.jpeg = data.tobytes()  # two clients may both encode it once; both results are equal
        return frame.jpeg


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client never keeps the process alive
    block_on_close = False

    def server_bind(self) -> None:
        if ":" in self.server_address[0]:
            self.address_family = socket.AF_INET6
            self.socket = socket.socket(self.address_family, self.socket_type)
        super().server_bind()

    def handle_error(self, request, client_address) -> None:  # noqa: ARG002
        pass  # a client that went away mid-response is not the run's problem


def _handler(view: LiveView) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = CLIENT_TIMEOUT
        server_version = "edgedet"

        def log_message(self, format, *args) -> None:  # noqa: A002
            pass  # the run's terminal shows the run, not an access log

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            try:
                if url.path in ("/", "/index.html"):
                    self._send(HTTPStatus.OK, "text/html; charset=utf-8", _page())
                elif url.path == "/api/latest":
                    self._json(view.record())
                elif url.path == "/api/summary":
                    self._json(view.summary_now())
                elif url.path == "/stream.mjpg":
                    self._stream(parse_qs(url.query).get("source", [None])[0])
                else:
                    self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")
            except (BrokenPipeError, ConnectionResetError, TimeoutError):  # socket.timeout is TimeoutError
                self.close_connection = True

        def _send(self, status: HTTPStatus, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, doc: Any) -> None:
            self._send(HTTPStatus.OK, "application/json", json.dumps(doc, separators=(",", ":")).encode())

        def _stream(self, source_text: str | None) -> None:
            source = int(source_text) if source_text is not None and source_text.isdigit() else None
            self.close_connection = True
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            with view.watching():
                # Each part ends with the next boundary: browsers show a part once they see the boundary
                # after it, so a part sent without one would wait on screen until the next frame.
                self.wfile.write(b"--%s\r\n" % BOUNDARY.encode())
                sent = 0
                while not view.closing:
                    frame = view.next_frame(sent, source, timeout=REPEAT_AFTER)
                    if frame is None:  # no new frame for a while (the source paused or ended): send the
                        frame = view.latest(source)  # last one again, as browsers may wait for a second part
                        if frame is None or frame.image is None:
                            continue
                    jpeg = view.jpeg(frame)
                    self.wfile.write(b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n--%s\r\n"
                                     % (len(jpeg), jpeg, BOUNDARY.encode()))
                    self.wfile.flush()
                    sent = frame.seq

    return Handler


def wait_until_interrupted(poll: float = 0.5) -> None:
    """Block until Ctrl-C / SIGTERM (both arrive as KeyboardInterrupt); returns normally then."""
    try:
        while True:
            time.sleep(poll)
    except KeyboardInterrupt:
        return
