"""``edgedet bench``: runs on a tiny model and writes records whose fields hang together.

Timings themselves are not checked (speed lives in benchmarks/); what is checked could only fail
if the code were wrong: the documented keys, the options echoed, p95 >= p50, and images per
second, achieved GFLOP/s and the fraction of sgemm all derived from the same p50.
"""

import json

import pytest

from edgedet.bench import time_call
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
    assert len({r["gemm_gflops"] for r in records}) == 1  # one sgemm probe per run, shared by every row
    for r in records:
        assert RECORD_KEYS <= r.keys()
        assert r["model"] == "grid" and r["imgsz"] == [64, 72] and r["iters"] == 3 and r["precision"] == "fp32"
        assert 0 < r["p50_ms"] <= r["p95_ms"]
        assert r["fps"] == pytest.approx(r["batch"] * 1e3 / r["p50_ms"], rel=1e-2)
        assert r["gflops"] == gflops
        assert r["achieved_gflops"] == pytest.approx(gflops * r["fps"], rel=1e-2, abs=0.01)
        assert r["fraction_of_gemm"] * r["gemm_gflops"] == pytest.approx(r["achieved_gflops"], rel=1e-2, abs=0.02)
    assert "of sgemm" in result.stdout


@pytest.mark.slow
def test_bench_bad_input(tmp_path):
    assert run_cli("bench").returncode == 2
    assert run_cli("bench", "--model", "grid", "--batch", "0").returncode == 2
    assert_user_error(run_cli("bench", "--model", "nope"), "unknown model")
    assert_user_error(run_cli("bench", "--model", "grid", "--backends", "tensorflow"), "unknown backend")
    assert_user_error(run_cli("bench", str(tmp_path / "missing.onnx")), "does not exist")
