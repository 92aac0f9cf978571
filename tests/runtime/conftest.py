"""Runtime test fixtures: small exported graphs of every family, videos and image folders.

Graphs are exported once per test session (small variants, no simplification, no check), with
metadata exactly as ``edgedet export`` writes it. Untrained detectors score everything alike and
give no detections, so the models are ``lively_model``s (see tests/conftest.py), which emit boxes
like a trained model would.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import lively_model, noise_frames

# Network inputs of the test graphs: small, and not square, so letterbox padding is exercised.
TEST_INPUT = {"yolov3": (96, 128), "yolov3-tiny": (96, 128), "unet": (64, 96)}
TEST_CONF = 0.25


def export_graph(name: str, out_dir: Path, fmt: str = "onnx", nms: bool = True,
                 imgsz: tuple[int, int] | None = None, file_name: str | None = None) -> Path:
    """Export a small lively ``name`` graph with full edgedet metadata; returns its path."""
    import torch

    from edgedet.export.deploy import NMSSettings, build_deploy_module
    from edgedet.export.metadata import build_metadata
    from edgedet.export.onnx import OnnxNMS, export_onnx
    from edgedet.export.torchscript import export_torchscript
    from edgedet.models import get_entry

    model = lively_model(name, input_size=imgsz or TEST_INPUT.get(name))
    size = tuple(model.cfg.input_size)
    entry = get_entry(name)
    settings = NMSSettings(conf=TEST_CONF, iou=0.45, max_det=30) if nms and entry.task == "detection" else None
    reference, names = build_deploy_module(model, nms=settings)
    path = out_dir / f"{file_name or name}.{fmt}"
    metadata = build_metadata(model, imgsz=size, input_format="uint8", dynamic=False, half=False, nms=settings,
                              output_names=names, source={"kind": "random-init"}, export_args={"test": True},
                              graph_format=fmt)
    example = torch.from_numpy(noise_frames(model, 2, seed=0, size=size))
    if fmt == "onnx":
        module, _ = build_deploy_module(model, nms=settings, nms_module=OnnxNMS(settings) if settings else None)
        export_onnx(module, example, path, names, metadata, False, simplify=False)
    else:
        export_torchscript(reference, example, path, metadata)
    return path


class GraphFactory:
    """Exports each (name, format, nms) once per session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[tuple, Path] = {}

    def __call__(self, name: str, fmt: str = "onnx", nms: bool = True) -> Path:
        key = (name, fmt, nms)
        if key not in self._cache:
            self._cache[key] = export_graph(name, self.root, fmt, nms,
                                            file_name=f"{name}{'' if nms else '-raw'}")
        return self._cache[key]


@pytest.fixture(scope="session")
def graphs(tmp_path_factory) -> GraphFactory:
    return GraphFactory(tmp_path_factory.mktemp("graphs"))


def scene(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """A busy BGR frame: noise under coloured shapes (random detectors fire on texture)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for _ in range(6):
        x, y = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(image, (x, y), (x + int(rng.integers(20, 80)), y + int(rng.integers(20, 80))), color, -1)
    return image


def write_video(path: Path, frames: int = 12, size: tuple[int, int] = (240, 320), fps: float = 10.0,
                fourcc: str = "mp4v") -> Path:
    """A small video of moving scenes, written by OpenCV; each frame's index is drawn on it."""
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    base = scene(h, w)
    for i in range(frames):
        frame = np.roll(base, 7 * i, axis=1)
        cv2.putText(frame, str(i), (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 3)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="session")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.fixture
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, (h, w) in enumerate([(240, 320), (300, 200), (128, 128)]):
        cv2.imwrite(str(folder / f"img{i}.jpg"), scene(h, w, seed=i))
    return folder


def write_oversized_png(path: Path, width: int = 60000, height: int = 60000) -> Path:
    """A tiny PNG whose header (IHDR, with a valid CRC) declares ``width`` x ``height`` pixels: far
    more than OpenCV's decoding limit, so ``cv2.imdecode`` refuses it with a ``cv2.error``."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


class MjpegServer:
    """A stand-in IP camera: an HTTP server on 127.0.0.1 streaming multipart/x-mixed-replace JPEGs.

    Each connection gets ``frames_per_connection`` frames (``None``: until ``max_seconds``), one
    every ``interval`` seconds, each showing its number; then the connection is closed, or with
    ``stall`` held open in silence (a camera that hangs).
    """

    def __init__(self, frames_per_connection: int | None = None, interval: float = 0.02,
                 size: tuple[int, int] = (120, 160), max_seconds: float = 30.0, stall: bool = False) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.connections = 0
        self.frames_sent = 0
        self._closing = threading.Event()  # set by close(), or after max_seconds: the camera stops
        self._lifetime = threading.Timer(max_seconds, self._closing.set)
        self._lifetime.daemon = True
        self._lifetime.start()
        server = self
        base = scene(*size, seed=3)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                while not server._closing.is_set():
                    if frames_per_connection is not None and i >= frames_per_connection:
                        break
                    frame = np.roll(base, 5 * i, axis=1)
                    cv2.putText(frame, str(i), (8, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
                    jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpeg) + jpeg + b"\r\n")
                        self.wfile.flush()
                    except OSError:  # the client went away
                        return
                    server.frames_sent += 1
                    i += 1
                    server._closing.wait(interval)  # paces the fake camera; nothing asserts on time
                if stall:
                    server._closing.wait()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/stream.mjpg"

    def close(self) -> None:
        self._lifetime.cancel()
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def mjpeg_server():
    servers: list[MjpegServer] = []

    def start(**kwargs) -> MjpegServer:
        servers.append(MjpegServer(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def silent_port():
    """A TCP port that accepts connections and never answers (a stream that never opens)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()
