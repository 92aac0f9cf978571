"""``edgedet run`` as a user runs it: videos, images, a live MJPEG stream, Ctrl-C, errors, no torch."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import pytest

from tests.conftest import REPO, assert_user_error, run_cli


def processed(stdout: str) -> int:
    match = re.search(r"processed (\d+)", stdout)
    assert match, stdout
    return int(match.group(1))


def video_frames(path: Path) -> tuple[int, tuple[int, int], float]:
    """Frames actually decodable in a video (not the container's claim), its size and fps."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = cap.get(cv2.CAP_PROP_FPS)
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n, size, fps


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_video_to_annotated_video_and_json_lines(graphs, video, tmp_path):
    out, js = tmp_path / "out" / "annotated.mp4", tmp_path / "out" / "detections.jsonl"
    result = run_cli("run", "--model", str(graphs("yolov3-tiny")), "--source", str(video), "--save", str(out),
                     "--save-json", str(js))
    assert result.returncode == 0, result.stderr
    assert processed(result.stdout) == 12 and "dropped 0, corrupt 0" in result.stdout
    for stage in ("read", "preprocess", "inference", "postprocess", "draw", "write"):
        assert re.search(rf"{stage} [\d.]+/[\d.]+", result.stdout), result.stdout
    assert "CPUExecutionProvider" in result.stdout and "FPS" in result.stdout
    assert video_frames(out) == (12, (320, 240), pytest.approx(10))
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    records = json_lines(js)
    assert [r["frame"] for r in records] == list(range(12))
    assert records[0]["source"] == str(video) and records[0]["width"] == 320
    boxes = [d["box"] for r in records for d in r["detections"]]
    assert boxes and all(0 <= x1 <= x2 <= 320 and 0 <= y1 <= y2 <= 240 for x1, y1, x2, y2 in boxes)
    assert all(isinstance(d["name"], str) and d["score"] >= 0.25 for r in records for d in r["detections"])


def test_batches_stride_and_max_frames(graphs, video, tmp_path):
    model = str(graphs("yolov3-tiny"))
    single, batched = tmp_path / "single.jsonl", tmp_path / "batched.jsonl"
    assert run_cli("run", "--model", model, "--source", str(video), "--save-json", str(single)).returncode == 0
    result = run_cli("run", "--model", model, "--source", str(video), "--batch", "5", "--save-json", str(batched))
    assert result.returncode == 0 and processed(result.stdout) == 12 and "batch 5" in result.stdout
    for a, b in zip(json_lines(single), json_lines(batched)):
        assert [d["label"] for d in a["detections"]] == [d["label"] for d in b["detections"]]
    strided = tmp_path / "strided.jsonl"
    result = run_cli("run", "--model", model, "--source", str(video), "--vid-stride", "4", "--max-frames", "2",
                     "--save-json", str(strided))
    assert result.returncode == 0 and processed(result.stdout) == 2
    assert [r["frame"] for r in json_lines(strided)] == [0, 4]


def test_image_folder_with_a_corrupt_file_to_video(graphs, image_folder, tmp_path):
    (image_folder / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff not an image")
    out = tmp_path / "folder.mp4"
    result = run_cli("run", "--model", str(graphs("grid")), "--source", str(image_folder), "--save", str(out))
    assert result.returncode == 0, result.stderr
    assert processed(result.stdout) == 3 and "corrupt 1" in result.stdout
    assert video_frames(out)[:2] == (3, (320, 240))  # every image letterboxed into the first one's size


def test_annotated_images_are_named_by_their_json_lines_frame(graphs, image_folder, tmp_path):
    (image_folder / "img01.jpg").write_bytes(b"\xff\xd8\xff not an image")  # frame 1 is skipped as corrupt
    out, js = tmp_path / "shot.jpg", tmp_path / "shot.jsonl"
    result = run_cli("run", "--model", str(graphs("grid")), "--source", str(image_folder), "--save", str(out),
                     "--save-json", str(js))
    assert result.returncode == 0, result.stderr
    frames = [r["frame"] for r in json_lines(js)]
    assert frames and 1 not in frames
    assert sorted(p.name for p in tmp_path.glob("shot_*.jpg")) == [f"shot_{f:06d}.jpg" for f in frames]


@pytest.mark.parametrize("name", ["unet", "localizer"])
def test_single_photo_to_annotated_image(graphs, darknet_reference, tmp_path, name):
    out, js = tmp_path / f"{name}.png", tmp_path / f"{name}.jsonl"
    result = run_cli("run", "--model", str(graphs(name)), "--source", str(darknet_reference / "dog.jpg"),
                     "--save", str(out), "--save-json", str(js), "--conf", "0")
    assert result.returncode == 0, result.stderr
    drawn = cv2.imread(str(out))
    assert drawn.shape == cv2.imread(str(darknet_reference / "dog.jpg")).shape
    (record,) = json_lines(js)
    if name == "unet":
        assert sum(record["segmentation"]["pixels"].values()) == 768 * 576
    else:
        assert len(record["detections"]) == 1


def test_live_mjpeg_stream(graphs, mjpeg_server, tmp_path):
    server = mjpeg_server(interval=0.02, max_seconds=30)
    out = tmp_path / "live.mp4"
    result = run_cli("run", "--model", str(graphs("yolov3-tiny")), "--source", server.url, "--max-frames", "6",
                     "--save", str(out), "--timeout", "3", timeout=60)
    assert result.returncode == 0, result.stderr
    assert processed(result.stdout) == 6 and "stream, 160x120" in result.stdout
    assert video_frames(out)[:2] == (6, (160, 120))


def follow_fifo(path: Path) -> queue.Queue[str | None]:
    """Make ``path`` a named pipe; a thread passes on each line written to it as it comes (``None``
    at the end), so a test can wait for "N records written" instead of polling a file."""
    os.mkfifo(path)
    lines: queue.Queue[str | None] = queue.Queue()

    def follow():
        with open(path, encoding="utf-8") as pipe:  # blocks until the writer opens it
            for line in pipe:
                lines.put(line)
        lines.put(None)

    threading.Thread(target=follow, daemon=True).start()
    return lines


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_finalises_the_video_and_json_lines(graphs, mjpeg_server, tmp_path, sig, code):
    server = mjpeg_server(interval=0.02, max_seconds=60)  # a camera that never ends by itself
    out, js = tmp_path / "stopped.mp4", tmp_path / "stopped.jsonl"
    lines = follow_fifo(js)  # the JSON lines arrive here as the run writes them
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "edgedet", "run", "--model", str(graphs("yolov3-tiny")),
                             "--source", server.url, "--save", str(out), "--save-json", str(js), "--timeout", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    records = []
    try:
        while len(records) < 5:  # five frames processed and written
            try:
                line = lines.get(timeout=60)
            except queue.Empty:
                proc.kill()
                pytest.fail(f"no JSON line within 60 s: {proc.communicate()}")
            assert line is not None, proc.communicate()
            records.append(json.loads(line))
        proc.send_signal(sig)
        while (line := lines.get(timeout=60)) is not None:  # the rest, up to the file's close
            records.append(json.loads(line))
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and f"stopped by {sig.name}" in stdout
    n = processed(stdout)
    assert n >= 5 and len(records) == n
    assert [r["frame"] for r in records] == sorted(r["frame"] for r in records)
    assert video_frames(out)[0] == n


ERRORS = {
    "missing camera": (["--source", "camera63"], "no camera at index 63"),
    "bare index": (["--source", "63"], "no camera at index 63"),
    "missing file": (["--source", "nowhere/clip.mp4"], "does not exist"),
    "refused stream": (["--source", "http://127.0.0.1:1/video.mjpg", "--timeout", "1"], "cannot open stream"),
    "show without display": (["--source", "{video}", "--show"], "needs a display"),
    "bad save suffix": (["--source", "{video}", "--save", "out.xyz"], "give a video"),
    "opencv cannot run nms": (["--source", "{video}", "--backend", "opencv"], "OpenCV DNN"),
    "provider not installed": (["--source", "{video}", "--providers", "coreml"], "coreml is not available"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_errors_are_one_line(graphs, video, tmp_path, case):
    args, fragment = ERRORS[case]
    args = [a.format(video=video) for a in args]
    env_display = {k: os.environ.pop(k) for k in ("DISPLAY", "WAYLAND_DISPLAY") if k in os.environ}
    try:
        result = run_cli("run", "--model", str(graphs("grid")), *args, cwd=tmp_path, timeout=60)
    finally:
        os.environ.update(env_display)
    assert_user_error(result, fragment)


def test_show_with_an_unreachable_display_is_a_user_error(graphs, video, monkeypatch):
    # OpenCV's GUI toolkit aborts the process on a dead display; the run must refuse cleanly first.
    monkeypatch.setenv("DISPLAY", ":97")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert_user_error(run_cli("run", "--model", str(graphs("grid")), "--source", str(video), "--show"), "--show")


def test_unreadable_and_foreign_model_files(graphs, video, tmp_path):
    import onnx

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not protobuf" * 20)
    assert_user_error(run_cli("run", "--model", str(junk), "--source", str(video)), "junk.onnx")
    plain = tmp_path / "plain.onnx"
    graph = onnx.load(str(graphs("grid")))
    del graph.metadata_props[:]
    onnx.save(graph, str(plain))
    assert_user_error(run_cli("run", "--model", str(plain), "--source", str(video)), "no edgedet metadata")
    weights = tmp_path / "model.h5"
    weights.write_bytes(b"x")
    assert_user_error(run_cli("run", "--model", str(weights), "--source", str(video)), "not an exported graph")


def test_onnx_runs_end_to_end_without_torch(graphs, video, tmp_path):
    out, js = tmp_path / "no-torch.mp4", tmp_path / "no-torch.jsonl"
    result = run_cli("run", "--model", str(graphs("yolov3-tiny")), "--source", str(video), "--save", str(out),
                     "--save-json", str(js), no_torch=True)
    assert result.returncode == 0, result.stderr
    assert processed(result.stdout) == 12 and video_frames(out)[0] == 12 and len(json_lines(js)) == 12
    # And the torchscript backend says what to install instead of failing obscurely.
    assert_user_error(run_cli("run", "--model", str(graphs("yolov3-tiny", "torchscript")), "--source", str(video),
                              no_torch=True), "needs PyTorch")


def test_a_source_given_up_after_its_reconnects_ends_with_exit_1(monkeypatch, capsys):
    """The summary and outputs are finalised, then one ``error:`` line and exit 1, so a supervisor
    (systemd, docker) sees the failure; the backoff itself is covered in test_sources.py."""
    import edgedet.runtime.pipeline as pipeline
    from edgedet.cli import main
    from edgedet.runtime.pipeline import RunSummary

    given_up = "http://cam/video.mjpg: the stream stalled or dropped on every connection; gave up"

    def fake_run(*args, say, say_err, **kwargs):
        summary = RunSummary(model="m", task="detection", backend="onnxruntime", providers=["cpu"], batch=1,
                             sources=["cam"], processed=12,
                             problems=[given_up])
        say_err(f"warning: {given_up}")
        for line in summary.lines():
            say(line)
        return summary

    monkeypatch.setattr(pipeline, "run", fake_run)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--model", "m.onnx", "--source", "http://cam/video.mjpg"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: 1 of 1 source(s) failed and were given up (see the warnings above); outputs hold what was processed"]
    assert "Traceback" not in err


def test_spinning_modes_run_and_a_bad_one_is_refused(graphs, video, tmp_path):
    for mode in ("in-run", "on"):
        js = tmp_path / f"{mode}.jsonl"
        result = run_cli("run", "--model", str(graphs("yolov3-tiny")), "--source", str(video), "--spinning", mode,
                         "--save-json", str(js))
        assert result.returncode == 0, result.stderr
        assert processed(result.stdout) == 12 and len(json_lines(js)) == 12
    result = run_cli("run", "--model", str(graphs("yolov3-tiny")), "--source", str(video), "--spinning", "fast")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'fast' is not one of 'off', 'in-run', 'on'" in result.stderr
