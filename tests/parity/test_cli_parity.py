"""``edgedet parity`` as a user runs it: exit codes, the table, the JSON report, bad input."""

from __future__ import annotations

import json

import pytest

from tests.conftest import assert_user_error, run_cli


@pytest.mark.slow
def test_random_init_export_then_parity_passes_and_writes_json(tmp_path):
    out = tmp_path / "exported"
    assert run_cli("export", "--model", "grid", "--random-init", "--out", str(out), "--no-check").returncode == 0
    report = tmp_path / "report.json"
    result = run_cli("parity", str(out / "grid.onnx"), str(out / "grid.torchscript"), "--json", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "onnxruntime-cpu" in result.stdout and "torchscript-cpu" in result.stdout
    assert "verdict: PASS" in result.stdout and "FAIL" not in result.stdout
    doc = json.loads(report.read_text())
    assert doc["passed"] is True and len(doc["files"]) == 2
    onnx_file = doc["files"][0]
    assert onnx_file["reference"].startswith("random-init")
    cpu = next(b for b in onnx_file["backends"] if b["backend"] == "onnxruntime-cpu")
    assert cpu["status"] == "pass" and cpu["providers"][0] == "CPUExecutionProvider"
    names = [i["input"] for i in cpu["inputs"]]
    assert "empty scene" in names and "crowded mosaic" in names and "mixed batch" in names
    assert cpu["inputs"][0]["results"][0]["name"] == "detections"


@pytest.mark.slow
def test_bad_inputs(tmp_path):
    assert_user_error(run_cli("parity", str(tmp_path / "missing.onnx")), "does not exist")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk")
    assert_user_error(run_cli("parity", str(junk)), "not a readable ONNX")
    assert_user_error(run_cli("parity", str(tmp_path / "model.tflite")), "expected .onnx or .torchscript")
    out = tmp_path / "exported"
    assert run_cli("export", "--model", "localizer", "--random-init", "--format", "onnx", "--out", str(out),
                   "--no-check").returncode == 0
    (out / "localizer.pt").unlink()
    assert_user_error(run_cli("parity", str(out / "localizer.onnx")), "do not exist", "--weights")
    assert_user_error(run_cli("parity", str(out / "localizer.onnx"), "--weights", str(tmp_path / "nope.pt")),
                      "does not exist")
    for bad in (["--providers", "gpu"], ["--atol-out", "probs"], ["--atol-out", "probs=x"], []):
        args = ["parity", *bad] if bad else ["parity"]
        result = run_cli(*args) if bad else run_cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
