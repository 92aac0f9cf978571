"""``edgedet run --serve``: the live view's routes while a run goes on, stopping, clients, bad input."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from edgedet.runtime.serve import ServeError, parse_bind
from tests.conftest import REPO, assert_user_error, cli_in_process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class LiveRun:
    """``edgedet run ARGS --serve 127.0.0.1:PORT`` in a child process; its stderr lines are followed
    so a test can wait for "live view at URL" instead of sleeping."""

    def __init__(self, *args: str, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, "-m", "edgedet", "run", *args, "--serve",
                                      f"127.0.0.1:{self.port}", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._follow, daemon=True).start()
        self.url = self.wait_for(r"live view at (http://\S+)").group(1)
        assert self.url == f"http://127.0.0.1:{self.port}/", self.url

    def _follow(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                pytest.fail(f"no stderr line matching {pattern!r} within {timeout} s: {''.join(self.stderr)}")
            if line is None:
                self.kill()
                pytest.fail(f"the run ended before {pattern!r}: {''.join(self.stderr)}")
            if match := re.search(pattern, line):
                return match

    def get(self, path: str, timeout: float = 20) -> tuple[str, bytes]:
        with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=timeout) as response:
            return response.headers.get("Content-Type"), response.read()

    def json(self, path: str):
        kind, body = self.get(path)
        assert kind == "application/json", kind
        return json.loads(body)

    def wait_json(self, path: str, ready, timeout: float = 60):
        """Poll ``path`` until ``ready(doc)``; returns the doc."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.json(path)
            if ready(doc):
                return doc
            if time.monotonic() > deadline:
                pytest.fail(f"{path} never got ready: {doc}")
            time.sleep(0.1)

    def stop(self, sig: int | None = signal.SIGINT, timeout: float = 60) -> tuple[int, str, str]:
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            stdout, _ = self.proc.communicate(timeout=timeout)
        finally:
            self.kill()
        time.sleep(0.05)  # the follower thread takes the last lines
        return self.proc.returncode, stdout, "".join(self.stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def mjpeg_parts(url: str, n: int, timeout: float = 30) -> list[np.ndarray]:
    """Read ``n`` parts of a multipart MJPEG response and decode each with OpenCV."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        kind = response.headers.get("Content-Type")
        assert kind.startswith("multipart/x-mixed-replace; boundary="), kind
        boundary = b"--" + kind.split("boundary=", 1)[1].encode()
        images = []
        while len(images) < n:
            line = response.readline()
            if line.strip() != boundary:
                assert line.strip() == b"", line  # only the blank line after a part's bytes
                continue
            headers = {}
            while (line := response.readline().strip()):
                key, _, value = line.decode().partition(":")
                headers[key.lower()] = value.strip()
            assert headers["content-type"] == "image/jpeg", headers
            data = response.read(int(headers["content-length"]))
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert image is not None, "a part is not a JPEG"
            images.append(image)
        return images


def processed(stdout: str) -> int:
    match = re.search(r"processed (\d+)", stdout)
    assert match, stdout
    return int(match.group(1))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_live_view_while_running_then_a_signal_stops_run_and_server(graphs, mjpeg_server, tmp_path, sig, code):
    camera = mjpeg_server(interval=0.03, max_seconds=120)  # frames until the run is stopped
    js, video = tmp_path / "live.jsonl", tmp_path / "live.mp4"
    run = LiveRun("--model", str(graphs("yolov3-tiny")), "--source", camera.url, "--timeout", "5", "--track",
                  "--save-json", str(js), "--save", str(video))
    try:
        kind, page = run.get("/")
        assert kind.startswith("text/html") and b'<img id="stream" src="/stream.mjpg"' in page
        assert b"/api/latest" in page and b"/api/summary" in page and b"http" not in page.split(b"<script>")[1]

        first = run.wait_json("/api/summary", lambda s: s["processed"] >= 3)
        assert first["running"] is True and first["task"] == "detection" and "inference" in first["stages"]
        later = run.wait_json("/api/summary", lambda s: s["processed"] > first["processed"] + 5)
        assert later["seconds"] > first["seconds"] and later["frames_read"] >= later["processed"]

        latest = run.json("/api/latest")
        assert set(latest) == {"frame", "timestamp", "source", "width", "height", "raw", "detections"}
        assert (latest["width"], latest["height"]) == (160, 120) and latest["detections"]
        assert all("track_id" in d for d in latest["detections"])  # --track's records, as in the JSON lines
        assert run.json("/api/latest")["frame"] >= latest["frame"]

        parts = mjpeg_parts(run.url + "stream.mjpg", 3)
        for image in parts:
            assert image.shape == (120, 160, 3) and image.std() > 20  # the scene, not a blank frame
        assert not np.array_equal(parts[0], parts[2])  # the stream moves on
        with pytest.raises(urllib.error.HTTPError) as missing:
            run.get("/nowhere")
        assert missing.value.code == 404
    finally:
        returncode, stdout, stderr = run.stop(sig)
    assert returncode == code, stderr
    assert "Traceback" not in stderr and f"stopped by {sig.name}" in stdout
    assert not port_open(run.port)  # the server went with the run
    records = [json.loads(line) for line in js.read_text().splitlines()]  # finalised: renamed into place
    assert len(records) == processed(stdout) and video.is_file()
    same = [r for r in records if r["frame"] == latest["frame"]]
    assert same == [latest]  # /api/latest gave exactly the JSON line of that frame


def test_clients_that_leave_or_stall_do_not_stop_the_run(graphs, mjpeg_server, tmp_path):
    camera = mjpeg_server(interval=0.02, max_seconds=120)
    run = LiveRun("--model", str(graphs("yolov3-tiny")), "--source", camera.url, "--timeout", "5",
                  "--max-frames", "150")
    stalled = []
    try:
        run.wait_json("/api/summary", lambda s: s["processed"] >= 1)
        for _ in range(3):  # read one part, then reset the connection mid-stream
            sock = socket.create_connection(("127.0.0.1", run.port), timeout=10)
            sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"multipart/x-mixed-replace" in sock.recv(4096)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        for _ in range(2):  # ask for the stream and never read it
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", run.port))
            sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(sock)
        returncode, stdout, stderr = run.stop(sig=None, timeout=120)  # the run ends by itself
    finally:
        run.kill()
        for sock in stalled:
            sock.close()
    assert returncode == 0, stderr
    assert processed(stdout) == 150 and "Traceback" not in stderr
    assert not port_open(run.port)  # without --serve-linger the server ends with the source


def test_linger_keeps_serving_the_last_frame_until_ctrl_c(graphs, video):
    run = LiveRun("--model", str(graphs("yolov3-tiny")), "--source", str(video), extra=("--serve-linger",))
    try:
        run.wait_for(r"the run ended; still serving")
        summary = run.json("/api/summary")
        assert summary["running"] is False and summary["processed"] == 12 and summary["stopped_by"] is None
        assert run.json("/api/latest")["frame"] == 11
        (last,) = mjpeg_parts(run.url + "stream.mjpg", 1)
        assert last.shape == (240, 320, 3) and last.std() > 20
        (again,) = mjpeg_parts(run.url + "stream.mjpg?source=0", 1)  # the one source, by its index
        np.testing.assert_array_equal(again, last)  # the same last frame, encoded once
        assert port_open(run.port)
    finally:
        returncode, stdout, stderr = run.stop(signal.SIGINT)
    assert returncode == 0, stderr  # the run had finished: Ctrl-C only ends the serving
    assert processed(stdout) == 12 and "Traceback" not in stderr
    assert not port_open(run.port)


@pytest.mark.parametrize("value, expected", [
    ("8080", ("127.0.0.1", 8080)), (":8080", ("127.0.0.1", 8080)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("localhost:0", ("localhost", 0)), ("[::1]:9000", ("::1", 9000)),
])
def test_serve_addresses(value, expected):
    assert parse_bind(value) == expected


@pytest.mark.parametrize("value", ["", "web", "host:", "127.0.0.1:65536", "127.0.0.1:-1", ":80x", "::1:80",
                                   "[::1]", "a b:80", "http://127.0.0.1:80"])
def test_bad_serve_values_are_one_error_line(graphs, video, tmp_path, capsys, value):
    with pytest.raises(ServeError):
        parse_bind(value)
    js = tmp_path / "out.jsonl"
    result = cli_in_process(capsys, "run", "--model", str(graphs("yolov3-tiny")), "--source", str(video),
                            "--save-json", str(js), "--serve", value)
    assert_user_error(result, "--serve")
    assert list(tmp_path.iterdir()) == []


def test_linger_without_serve_is_an_error(graphs, video, capsys):
    result = cli_in_process(capsys, "run", "--model", str(graphs("yolov3-tiny")), "--source", str(video),
                            "--serve-linger")
    assert_user_error(result, "--serve-linger needs --serve")


@pytest.mark.parametrize("case", ["port in use", "address not here"])
def test_an_address_that_cannot_be_bound_fails_before_any_frame(graphs, video, tmp_path, capsys, case):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    where, fragment = {"port in use": (f"127.0.0.1:{port}", "the port is in use"),
                       "address not here": (f"203.0.113.7:{free_port()}", "cannot listen there")}[case]
    js = tmp_path / "out.jsonl"
    try:
        result = cli_in_process(capsys, "run", "--model", str(graphs("yolov3-tiny")), "--source", str(video),
                                "--save-json", str(js), "--serve", where)
    finally:
        blocker.close()
    assert_user_error(result, f"--serve {where}", fragment)
    assert result.stdout == "" and list(tmp_path.iterdir()) == []  # no frame was processed, nothing written
