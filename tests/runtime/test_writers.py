"""Run outputs under faults: full disks, failed runs over existing files, two runs, killed runs."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edgedet.runtime import files, writers
from edgedet.runtime.files import (
    DiskFullError,
    OutputError,
    OutputLock,
    OutputLockedError,
)
from edgedet.runtime.writers import JsonlSink, VideoSink
from tests.conftest import assert_user_error, run_cli


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _frame(i: int) -> np.ndarray:
    image = np.random.default_rng(i).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    return image


def _hidden(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _filling_write(after_lines: int):
    """An ``os.write`` that writes ``after_lines`` records, then half of the next one and fails."""
    calls = {"n": 0}

    def write(fd, data):
        calls["n"] += 1
        if calls["n"] <= after_lines:
            return os.write(fd, data)
        if calls["n"] == after_lines + 1:
            return os.write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")
    return write


def test_jsonl_out_of_space_keeps_the_complete_lines(tmp_path, monkeypatch):
    target = tmp_path / "out.jsonl"
    target.write_text('{"old": true}\n')
    monkeypatch.setattr(writers, "_write", _filling_write(3))
    sink = JsonlSink(target)
    for i in range(3):
        sink.write({"frame": i, "boxes": [[1, 2, 3, 4]] * 20})
    with pytest.raises(DiskFullError, match=f"no space left on device writing {target}"):
        sink.write({"frame": 3, "boxes": [[1, 2, 3, 4]] * 20})
    assert target.read_text() == '{"old": true}\n'  # nothing replaced until the run is finalised
    sink.close()
    lines = target.read_text().splitlines(keepends=True)
    assert [json.loads(line)["frame"] for line in lines] == [0, 1, 2] and lines[-1].endswith("\n")
    assert _hidden(tmp_path) == []
    assert stat.S_IMODE(target.stat().st_mode) == files.file_mode()


def test_jsonl_of_a_failed_run_leaves_the_existing_file(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text('{"old": true}\n')
    sink = JsonlSink(target)
    sink.write({"frame": 0})
    sink.discard()
    assert target.read_text() == '{"old": true}\n'
    assert _hidden(tmp_path) == []


def test_two_writers_of_the_same_jsonl(tmp_path):
    target = tmp_path / "out.jsonl"
    first = JsonlSink(target)
    with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
        JsonlSink(target)
    video = VideoSink(target.with_suffix(".mp4"), 10)
    with pytest.raises(OutputLockedError):
        VideoSink(target.with_suffix(".mp4"), 10)
    video.discard()
    first.close()
    JsonlSink(target).close()


def test_video_out_of_space_renames_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"an older video")
    full = {"now": False}
    monkeypatch.setattr(writers, "disk_is_full", lambda path: full["now"])
    sink = VideoSink(target, 10)
    for i in range(3):
        sink.write(_frame(i))
    full["now"] = True  # OpenCV itself says nothing when the disk fills
    with pytest.raises(DiskFullError, match="no space left on device writing"):
        sink.write(_frame(3))
    with pytest.raises(DiskFullError):
        sink.close()
    assert target.read_bytes() == b"an older video"
    assert _hidden(tmp_path) == []


def test_a_video_that_does_not_open_is_not_renamed(tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "_playable", lambda path, frames: False)
    sink = VideoSink(tmp_path / "out.mp4", 10)
    sink.write(_frame(0))
    with pytest.raises(OutputError, match="does not open"):
        sink.close()
    assert list(tmp_path.iterdir()) == []


def test_a_killed_runs_temporary_video_is_cleaned_by_the_next_run(tmp_path):
    stale = tmp_path / f".out.mp4.{_dead_pid()}.0123abcd.mp4"
    stale.write_bytes(b"half a video")
    sink = VideoSink(tmp_path / "out.mp4", 10)
    assert not stale.exists()
    for i in range(4):
        sink.write(_frame(i))
    path = sink.close()
    capture = cv2.VideoCapture(str(path))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    capture.release()
    assert stat.S_IMODE(path.stat().st_mode) == files.file_mode()
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


# The whole run: in process (a writer that fills the disk) and as a user runs it.

def _options(tmp_path, **kw):
    from edgedet.runtime.pipeline import RunOptions

    return RunOptions(save=tmp_path / "out.mp4", save_json=tmp_path / "out.jsonl", progress=False, **kw)


def test_run_out_of_space_reports_it_and_keeps_only_complete_lines(graphs, video, tmp_path, monkeypatch):
    from edgedet.runtime.pipeline import run

    frames = {"n": 0}

    def full(path):
        frames["n"] += 1
        return frames["n"] > 5

    monkeypatch.setattr(writers, "disk_is_full", full)
    with pytest.raises(DiskFullError) as info:
        run(graphs("grid"), str(video), _options(tmp_path), say=lambda m: None, say_err=lambda m: None)
    message = str(info.value)
    assert "no space left on device writing" in message and f"{tmp_path / 'out.mp4'} not written" in message
    assert "kept" in message and "complete line" in message
    assert not (tmp_path / "out.mp4").exists()
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert 1 <= len(lines) and all(json.loads(line)["frame"] >= 0 for line in lines)
    assert f"{len(lines)} complete line" in message
    assert _hidden(tmp_path) == []


def test_run_with_the_json_lines_filling_the_disk(graphs, video, tmp_path, monkeypatch):
    from edgedet.runtime.pipeline import run

    monkeypatch.setattr(writers, "_write", _filling_write(3))
    with pytest.raises(DiskFullError) as info:
        run(graphs("grid"), str(video), _options(tmp_path), say=lambda m: None, say_err=lambda m: None)
    assert f"writing {tmp_path / 'out.jsonl'}" in str(info.value) and "3 complete lines" in str(info.value)
    assert [json.loads(line)["frame"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert not (tmp_path / "out.mp4").exists()
    assert _hidden(tmp_path) == []


def test_a_run_that_reads_no_frame_leaves_existing_files(graphs, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "bad.jpg").write_bytes(b"not an image")
    js, out = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    js.write_text('{"old": true}\n')
    result = run_cli("run", "--model", str(graphs("grid")), "--source", str(folder), "--save", str(out),
                     "--save-json", str(js))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert js.read_text() == '{"old": true}\n' and not out.exists()
    assert _hidden(tmp_path) == []


def test_a_run_failing_after_opening_its_outputs_leaves_existing_files(graphs, video, tmp_path, monkeypatch):
    from edgedet.runtime.api import ExportedModel
    from edgedet.runtime.pipeline import run

    original = ExportedModel.process

    def failing(self, *args, **kwargs):
        for i, result in enumerate(original(self, *args, **kwargs)):
            if i == 3:
                raise RuntimeError("the backend died")
            yield result

    monkeypatch.setattr(ExportedModel, "process", failing)
    (tmp_path / "out.jsonl").write_text('{"old": true}\n')
    (tmp_path / "out.mp4").write_bytes(b"an older video")
    with pytest.raises(RuntimeError, match="the backend died"):
        run(graphs("grid"), str(video), _options(tmp_path), say=lambda m: None, say_err=lambda m: None)
    assert (tmp_path / "out.jsonl").read_text() == '{"old": true}\n'
    assert (tmp_path / "out.mp4").read_bytes() == b"an older video"
    assert _hidden(tmp_path) == []


def test_a_second_run_of_the_same_output_fails_at_once(graphs, video, tmp_path):
    js = tmp_path / "out.jsonl"
    js.write_text('{"old": true}\n')
    lock = OutputLock(js)  # another run holds it
    try:
        result = run_cli("run", "--model", str(graphs("grid")), "--source", str(video), "--save-json", str(js))
    finally:
        lock.release()
    assert_user_error(result, f"{js} is being written by another edgedet run (pid {os.getpid()})")
    assert js.read_text() == '{"old": true}\n'


def test_run_on_a_full_disk(graphs, video, small_tmpfs):
    disk = small_tmpfs("96k")
    out, js = disk / "out.mp4", disk / "out.jsonl"
    result = run_cli("run", "--model", str(graphs("grid")), "--source", str(video), "--save", str(out),
                     "--save-json", str(js))
    assert_user_error(result, "no space left on device writing")
    assert "wrote" not in result.stdout
    assert not out.exists()
    if js.exists():
        assert all(json.loads(line) for line in js.read_text().splitlines())
    assert _hidden(disk) == []


@pytest.mark.parametrize("option", ["--save", "--save-json"])
def test_run_into_an_unwritable_location(graphs, video, tmp_path, option):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    target = afile / ("out.mp4" if option == "--save" else "out.jsonl")
    result = run_cli("run", "--model", str(graphs("grid")), "--source", str(video), option, str(target))
    assert_user_error(result, "cannot write", str(target))
    assert result.stdout == ""
