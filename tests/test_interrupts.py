"""SIGINT and SIGTERM finalise what was written so far: training's last.pt, no temporaries, no
unchecked graph under a final name. Signals are sent on events (a progress line, a write), never
after a wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from edgedet.export.api import export_model
from edgedet.export.options import ExportOptions
from edgedet.train.checkpoint import load_checkpoint
from tests.conftest import REPO, run_cli

LOC = "digits-loc:n=32,glyphs=builtin"
SMALL_LOC = ["--cfg", "widths=[8,16]", "--cfg", "hidden=32"]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1")


def _hidden(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_sigterm_during_train_writes_last_pt_and_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgedet", "train", "--model", "localizer", "--data", LOC, "--epochs", "1000",
           "--batch", "16", "--device", "cpu", "--workers", "0", "--out", str(out), *SMALL_LOC]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    seen = []
    try:
        for line in proc.stderr:  # one line per epoch reaches a pipe as the epoch ends
            seen.append(line)
            if line.startswith("epoch 1/1000"):
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.stderr.read()
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = "".join(seen) + rest
    assert code == 143, stderr
    assert "interrupted in epoch" in stderr and "Traceback" not in stderr
    state = load_checkpoint(out / "last.pt")["train"]
    assert not state["finished"] and state["epoch"] >= 1
    assert not _hidden(out)
    resumed = run_cli("train", "--resume", "--out", str(out), "--epochs", str(state["epoch"] + 1))
    assert resumed.returncode == 0, resumed.stderr
    assert f"at epoch {state['epoch'] + 1}" in resumed.stderr


_SIGTERM_MID_WRITE = """
import os, signal
import edgedet.export.onnx as onnx_export
real = onnx_export.export_onnx_torchscript
def export_then_sigterm(*args, **kwargs):
    real(*args, **kwargs)  # the traced graph is in the temporary file now
    os.kill(os.getpid(), signal.SIGTERM)
onnx_export.export_onnx_torchscript = export_then_sigterm
from edgedet.cli import main
main()
"""


def test_sigterm_during_export_leaves_no_temporaries(tmp_path):
    out = tmp_path / "ex"
    out.mkdir()
    (out / "grid.onnx").write_bytes(b"an earlier export")
    cmd = [sys.executable, "-c", _SIGTERM_MID_WRITE, "export", "--model", "grid", "--random-init", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: interrupted by SIGTERM"]
    assert not _hidden(out)
    assert (out / "grid.onnx").read_bytes() == b"an earlier export"  # not replaced by the interrupted run
    assert sorted(p.name for p in out.iterdir()) == ["grid.onnx", "grid.pt"]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_interrupted_before_its_check_leaves_no_graph(tmp_path, monkeypatch, fmt):
    import edgedet.export.api as api

    checked = []

    def interrupted_check(fmt_, path, *args, **kwargs):
        assert path.is_file() and path.name.startswith(".")  # checked under its temporary name
        checked.append(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "_check_file", interrupted_check)
    with pytest.raises(KeyboardInterrupt):
        export_model("grid", tmp_path, ExportOptions(formats=(fmt,)), random_init=True, say=lambda m: None)
    assert checked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.pt"]  # no unchecked graph, no temporary


def test_checked_graph_lands_under_its_final_name(tmp_path):
    files = export_model("grid", tmp_path, ExportOptions(formats=("onnx",)), random_init=True, say=lambda m: None)
    assert [f.path for f in files] == [tmp_path / "grid.onnx"] and files[0].check_passed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.onnx", "grid.pt"]
