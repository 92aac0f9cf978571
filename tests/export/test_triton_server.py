"""A real Triton server serving what ``edgedet export --triton DIR --triton-backend python`` wrote.

The server is the ``tritonserver`` inside the ``nvidia-pytriton`` wheel (Linux x86-64 only), whose
one backend is Triton's Python backend. It answers single, batched and queued-together requests over
HTTP (``tritonclient``), and its outputs must equal what the runtime computes on the same
letterboxed frames and what ``edgedet run --save-json`` wrote for them.

The server's Python environment is kept apart from edgedet's, as README's "Serving at scale:
Triton" says: nvidia-pytriton requires numpy < 2 (its backend stub reads arrays wrongly under
numpy 2) while edgedet's environment has numpy 2. The test makes a venv of this interpreter
holding ``numpy<2`` and the wheel (installed without its dependencies), and lets it see this
interpreter's site-packages after its own, for onnxruntime. It is built once (about 10 s of pip),
kept in pytest's cache folder, and ``EDGEDET_TRITON_ENV`` can name a prepared one instead.
Where the wheel cannot be had (another platform, no package index, a Python without a shared
libpython), the tests skip and say why.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgedet import samples
from tests.conftest import run_cli

# The first test also builds the server's environment (pip), exports and starts the server.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PYTRITON = "nvidia-pytriton==0.7.0"  # tritonserver 2.51, Python backend stubs for Python 3.8 to 3.13
MODEL_ENV_PINS = ("numpy<2",)
MODEL = "yolov3-tiny"
OUTPUTS = ("num_dets", "boxes", "scores", "labels")
READY_TIMEOUT_S = 180  # model load on a busy 2-core machine; the server is killed after it


@dataclass(frozen=True)
class ServerEnv:
    """A Python environment holding the wheel's server and the model's numpy."""

    root: Path
    site: Path

    @property
    def dist(self) -> Path:
        return self.site / "pytriton" / "tritonserver"

    @property
    def stub(self) -> Path:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.dist / "python_backend_stubs" / version / "triton_python_backend_stub"

    def process_env(self) -> dict[str, str]:
        """The server's environment: the backend stub finds this venv's interpreter as ``python3``
        on PATH, and links this interpreter's libpython and the wheel's bundled libraries. No GPU
        is visible to it, so model.py runs on ONNX Runtime's CPU provider and its answers can be
        held to the CPU runtime's exactly; model.py's CUDA path is not covered here."""
        libs = [sysconfig.get_config_var("LIBDIR"), str(self.site / "nvidia_pytriton.libs")]
        if os.environ.get("LD_LIBRARY_PATH"):
            libs.append(os.environ["LD_LIBRARY_PATH"])
        env = dict(os.environ, PATH=f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                   LD_LIBRARY_PATH=os.pathsep.join(libs), CUDA_VISIBLE_DEVICES="")
        for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(name, None)
        return env


def _site_packages(root: Path) -> Path:
    return root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _build_env(root: Path) -> None:
    """venv + ``numpy<2`` + the wheel without dependencies, then this interpreter's site-packages
    appended (a ``.pth`` file), built beside ``root`` and renamed into place when complete (an
    interrupted build leaves no half environment; of two concurrent builds, the first stays)."""
    partial = Path(tempfile.mkdtemp(prefix=f"{root.name}.partial-", dir=root.parent))
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(partial)], check=True,
                   timeout=120)
    site = _site_packages(partial)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          "--no-deps", "--target", str(site), PYTRITON, *MODEL_ENV_PINS],
                         capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        last = (pip.stderr.strip().splitlines() or ["(no output)"])[-1]
        pytest.skip(f"cannot install {PYTRITON} and {' '.join(MODEL_ENV_PINS)} into the server's environment: {last}")
    host = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "edgedet-host.pth").write_text("".join(f"{p}\n" for p in sorted(host)))
    try:
        partial.rename(root)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not root.is_dir():
            raise


@pytest.fixture(scope="module")
def server_env(request, tmp_path_factory) -> ServerEnv:
    if not (sys.platform == "linux" and platform.machine() == "x86_64"):
        pytest.skip(f"nvidia-pytriton ships its tritonserver for Linux x86-64 only, not {sys.platform} "
                    f"{platform.machine()}")
    pytest.importorskip("tritonclient.http", reason="tritonclient[http] (dev extra) is not installed")
    libpython = Path(sysconfig.get_config_var("LIBDIR") or "") / (sysconfig.get_config_var("INSTSONAME") or "")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libpython.is_file():
        pytest.skip(f"{sys.executable} has no shared libpython (built without --enable-shared); "
                    f"Triton's Python backend stub links one")
    if os.environ.get("EDGEDET_TRITON_ENV"):
        root = Path(os.environ["EDGEDET_TRITON_ENV"])
    else:
        cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
        base = cache.mkdir("triton-server-env") if cache is not None else tmp_path_factory.mktemp("triton-env")
        root = base / f"py{sys.version_info.major}{sys.version_info.minor}-{PYTRITON.split('==')[1]}"
        if not root.is_dir():
            _build_env(root)
    env = ServerEnv(root, _site_packages(root))
    if not (env.dist / "bin" / "tritonserver").is_file():
        pytest.skip(f"no tritonserver in {env.dist} (is {PYTRITON} installed there?)")
    if not env.stub.is_file():
        pytest.skip(f"{PYTRITON} has no Python backend stub for Python "
                    f"{sys.version_info.major}.{sys.version_info.minor}")
    return env


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped yolov3-tiny checkpoint exported with a python-backend repository, and
    ``edgedet run --save-json`` over the shipped frames (records by source path)."""
    tmp = tmp_path_factory.mktemp("served")
    result = run_cli("export", "--model", MODEL, "--weights", str(samples.checkpoint(MODEL)), "--format", "onnx",
                     "--out", str(tmp / "out"), "--triton", str(tmp / "repo"), "--triton-backend", "python",
                     timeout=300)
    assert result.returncode == 0, result.stderr
    assert "python backend" in result.stdout and "PASS" in result.stdout
    graph = tmp / "out" / f"{MODEL}.onnx"
    run = run_cli("run", "--model", str(graph), "--source", str(samples.root() / "images"),
                  "--save-json", str(tmp / "run.jsonl"), timeout=300)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in (tmp / "run.jsonl").read_text().splitlines()]
    return tmp, graph, {Path(r["source"]).name: r for r in records}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(log: Path) -> str:
    text = log.read_text(errors="replace") if log.is_file() else "(no log)"
    return "\n".join(line for line in text.splitlines() if not line.startswith(("+", "|")))[-6000:]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the server and its backend stubs), SIGKILL if it
    has not exited within 30 s, then SIGKILL to whatever of the group is left."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def server(server_env, exported, tmp_path_factory):
    """A started server on 127.0.0.1 with the repository loaded: ``(client, its URL)``."""
    import tritonclient.http as httpclient

    tmp, _, _ = exported
    work = tmp_path_factory.mktemp("tritonserver")
    backend = work / "backends" / "python"  # what pytriton prepares too: the stub for this Python beside the backend
    backend.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(server_env.dist / "backends" / "python" / name, backend / name)
    shutil.copy2(server_env.stub, backend / "triton_python_backend_stub")
    port = _free_port()
    log = work / "tritonserver.log"
    cmd = [str(server_env.dist / "bin" / "tritonserver"), "--model-repository", str(tmp / "repo"),
           "--backend-directory", str(work / "backends"), "--http-address", "127.0.0.1", "--http-port", str(port),
           "--allow-grpc", "false", "--allow-metrics", "false", "--disable-auto-complete-config",
           "--exit-on-error", "true", "--exit-timeout-secs", "5"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=work, env=server_env.process_env(),
                                start_new_session=True)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=120)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"tritonserver exited with {proc.returncode} before {MODEL} was ready:\n{_log_tail(log)}")
            try:
                if client.is_model_ready(MODEL):
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{MODEL} not ready after {READY_TIMEOUT_S} s:\n{_log_tail(log)}")
            time.sleep(0.25)
        yield client, f"127.0.0.1:{port}"
    finally:
        _stop(proc)


def _frames(graph: Path, names: list[str]):
    """The shipped frames ``names`` letterboxed as ``edgedet run`` does, and the runtime's outputs."""
    from edgedet.runtime import load_model
    from edgedet.runtime.sources.base import read_image

    model = load_model(graph, backend="onnxruntime", providers="cpu", batch=len(names))
    batch, letterboxes = model.preprocess([read_image(samples.root() / "images" / n) for n in names])
    batch = batch.copy()
    return batch, letterboxes, model.backend.run(batch)


def _request(client, batch: np.ndarray):
    import tritonclient.http as httpclient

    images = httpclient.InferInput("images", list(batch.shape), "UINT8")
    images.set_data_from_numpy(batch)
    return [images], [httpclient.InferRequestedOutput(name) for name in OUTPUTS]


def _served(result, n: int) -> list[np.ndarray]:
    out = [result.as_numpy(name) for name in OUTPUTS]
    out[0] = out[0].reshape(n)  # num_dets: Triton's [1] per request (reshaped to [] for the model)
    return out


def _assert_same(served: list[np.ndarray], local: list[np.ndarray]) -> None:
    """Served outputs equal the runtime's on the same frames: counts and labels exactly, boxes and
    scores to 1e-5 (the same graph and ONNX Runtime build on the same CPU)."""
    for name, got, want in zip(OUTPUTS, served, local):
        assert got.shape == want.shape, (name, got.shape, want.shape)
        if np.issubdtype(want.dtype, np.integer):
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=name)


def _assert_matches_run(served: list[np.ndarray], letterboxes, records: list[dict]) -> None:
    """Served detections, mapped back through each frame's letterbox, equal ``edgedet run``'s JSON
    (which rounds boxes to 0.01 px and scores to 1e-5)."""
    num_dets, boxes, scores, labels = served
    for i, (lb, record) in enumerate(zip(letterboxes, records)):
        n = int(num_dets[i])
        dets = record["detections"]
        assert len(dets) == n, (record["source"], len(dets), n)
        if n == 0:
            continue
        np.testing.assert_allclose(lb.boxes_to_source(boxes[i, :n]), [d["box"] for d in dets],
                                   rtol=0, atol=0.005 + 1e-4)
        np.testing.assert_allclose(scores[i, :n], [d["score"] for d in dets], rtol=0, atol=5e-6 + 1e-7)
        assert labels[i, :n].tolist() == [d["label"] for d in dets]


def test_python_backend_config_parses_with_tritons_own_schema(exported):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                           reason="tritonclient[grpc] (dev extra) is not installed")
    from google.protobuf import text_format

    tmp, _, _ = exported
    config = text_format.Parse((tmp / "repo" / MODEL / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.backend == "python" and not config.platform and config.HasField("dynamic_batching")
    assert [t.name for t in config.input] == ["images"] and list(config.input[0].dims) == [256, 256, 3]
    assert [t.name for t in config.output] == list(OUTPUTS)
    assert sorted(p.name for p in (tmp / "repo" / MODEL / "1").iterdir()) == ["model.onnx", "model.py"]


def test_a_single_frame_gets_what_edgedet_run_gets(server, exported):
    client, _ = server
    tmp, graph, records = exported
    name = "clutter_0.png"
    batch, letterboxes, local = _frames(graph, [name])
    assert int(local[0][0]) > 0  # a frame with detections, so the comparison has something to compare
    inputs, outputs = _request(client, batch)
    served = _served(client.infer(MODEL, inputs, outputs=outputs), 1)
    _assert_same(served, local)
    _assert_matches_run(served, letterboxes, [records[name]])


def test_a_batched_request_gets_what_edgedet_run_gets(server, exported):
    """All shipped frames in one request: 320x320 colour scenes and 48x60 grey digits, so the
    letterbox pads differently per frame."""
    client, _ = server
    tmp, graph, records = exported
    names = sorted(records)
    assert len(names) >= 3
    batch, letterboxes, local = _frames(graph, names)
    inputs, outputs = _request(client, batch)
    served = _served(client.infer(MODEL, inputs, outputs=outputs), len(names))
    assert (served[0] > 0).sum() >= 2
    _assert_same(served, local)
    _assert_matches_run(served, letterboxes, [records[n] for n in names])


def _executions(client) -> tuple[int, int]:
    """``(requests answered, model executions)`` so far, from the server's statistics."""
    stats = client.get_inference_statistics(MODEL)["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"]), int(stats["execution_count"])


def test_requests_queued_together_run_as_one_batch_and_each_gets_its_own_answer(server, exported):
    """Single-frame requests sent while the model is busy with a full batch wait in the dynamic
    batcher's queue and reach model.py together, which runs them as one batch and splits the
    outputs back; each request must still get its own frame's answer."""
    import tritonclient.http as httpclient

    _, url = server
    tmp, graph, records = exported
    names = sorted(records)
    client = httpclient.InferenceServerClient(url, concurrency=len(names) + 1, network_timeout=120)
    full, _, _ = _frames(graph, names)
    busy = np.resize(full, (64, *full.shape[1:]))  # max_batch_size frames keep the model busy a while
    singles = [(_request(client, batch), local) for batch, _, local in (_frames(graph, [n]) for n in names)]
    requests_before, executions_before = _executions(client)
    inputs, outputs = _request(client, busy)
    pending = [(client.async_infer(MODEL, inputs, outputs=outputs), None)]
    for (inputs, outputs), local in singles:  # prepared beforehand: sent while the batch runs
        pending.append((client.async_infer(MODEL, inputs, outputs=outputs), local))
    for request, local in pending:
        result = request.get_result()
        if local is not None:
            _assert_same(_served(result, 1), local)
    deadline = time.monotonic() + 30  # the server counts a request after sending its response
    while (counts := _executions(client))[0] - requests_before < len(pending) and time.monotonic() < deadline:
        time.sleep(0.1)
    client.close()
    requests, executions = counts
    assert requests - requests_before == len(pending)
    assert executions - executions_before < len(pending), "no requests were joined"


def test_a_bad_request_gets_an_error_and_the_server_keeps_serving(server, exported):
    from tritonclient.utils import InferenceServerException

    client, _ = server
    tmp, graph, _ = exported
    wrong = np.zeros((1, 100, 100, 3), np.uint8)  # not the graph's 256x256
    inputs, outputs = _request(client, wrong)
    with pytest.raises(InferenceServerException, match="images"):
        client.infer(MODEL, inputs, outputs=outputs)
    batch, _, local = _frames(graph, ["clutter_1.png"])
    inputs, outputs = _request(client, batch)
    _assert_same(_served(client.infer(MODEL, inputs, outputs=outputs), 1), local)
    assert client.is_model_ready(MODEL)
