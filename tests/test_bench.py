"""``edgedet bench``: runs on a tiny model and writes records whose fields hang together.

Timings themselves are not checked (speed lives in benchmarks/); what is checked could only fail
if the code were wrong: the documented keys, the options echoed, p95 >= p50, and images per
second, achieved GFLOP/s and the fraction of the MatMul peak all derived from the same p50.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgedet.bench import LOAD_FLAG, MachineProbe, time_call
from tests.conftest import assert_user_error, run_cli

RECORD_KEYS = {"backend", "batch", "imgsz", "p50_ms", "p95_ms", "fps"}  # the documented `bench --json` keys


def test_time_call_times_only_the_iterations():
    calls = []
    times = time_call(lambda: calls.append(1), warmup=2, iters=5)
    assert len(calls) == 7 and len(times) == 5 and all(isinstance(t, float) for t in times)


@pytest.mark.slow
def test_bench_on_a_tiny_model_writes_json(tmp_path):
    from edgedet.models import create_model, model_gflops

    out = tmp_path / "bench.json"
    result = run_cli("bench", "--model", "grid", "--backends", "eager,onnxruntime,torchscript", "--batch", "1,2",
                     "--imgsz", "64,72", "--warmup", "1", "--iters", "3", "--json", str(out))
    assert result.returncode == 0, result.stderr
    records = json.loads(out.read_text())
    assert {(r["backend"], r["batch"]) for r in records} == {(b, n) for b in ("eager", "onnxruntime", "torchscript")
                                                             for n in (1, 2)}
    gflops = round(model_gflops(create_model("grid", input_size=(64, 72))), 4)
    for r in records:
        assert RECORD_KEYS <= r.keys()
        assert r["model"] == "grid" and r["imgsz"] == [64, 72] and r["iters"] == 3 and r["precision"] == "fp32"
        assert 0 < r["p50_ms"] <= r["p95_ms"]
        assert r["fps"] == pytest.approx(r["batch"] * 1e3 / r["p50_ms"], rel=1e-2)
        assert r["gflops"] == gflops
        assert r["achieved_gflops"] == pytest.approx(gflops * r["fps"], rel=1e-2, abs=0.01)
        assert r["fraction_of_gemm"] * r["gemm_gflops"] == pytest.approx(r["achieved_gflops"], rel=1e-2, abs=0.02)
        assert r["gemm_gflops"] > 0  # probed right next to this row
        assert r["others_busy"] is None or 0 <= r["others_busy"] <= 1
        assert r["under_load"] == (r["others_busy"] is not None and r["others_busy"] > LOAD_FLAG)
    assert "of peak" in result.stdout and "others' CPU" in result.stdout


@pytest.mark.slow
def test_bench_bad_input(tmp_path):
    assert run_cli("bench").returncode == 2
    assert run_cli("bench", "--model", "grid", "--batch", "0").returncode == 2
    assert_user_error(run_cli("bench", "--model", "nope"), "unknown model")
    assert_user_error(run_cli("bench", "--model", "grid", "--backends", "tensorflow"), "unknown backend")
    assert_user_error(run_cli("bench", str(tmp_path / "missing.onnx")), "does not exist")


def test_probe_flags_cpu_time_other_processes_take_while_a_row_runs():
    import os
    import subprocess
    import sys

    probe = MachineProbe(seconds=0.05)
    # A busy process beside the timed work: it uses CPU time that is not this process's.
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        def work():
            total = 0
            for i in range(3_000_000):  # about a second of this process's own CPU time
                total += i
            return [1.0]

        _, gemm, others = probe.measure(work)
    finally:
        busy.kill()
        busy.wait()
    assert gemm > 0
    if others is None:
        pytest.skip("no /proc/stat on this platform")
    assert others > 0.4 / os.cpu_count()  # the spinning child used about one core's time


def test_gpu_kit_skips_cleanly_without_a_gpu(tmp_path):
    """benchmarks/gpu_check.py on a machine without CUDA: exit 0, says why, leaves the table alone."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the kit would run for real (run it by hand and commit its table)")
    table = tmp_path / "gpu.md"
    table.write_text("previous results\n")
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(table)],
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert "gpu_check: skipped: no CUDA device" in result.stdout
    assert "Traceback" not in result.stderr
    assert table.read_text() == "previous results\n"
