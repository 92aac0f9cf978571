"""``edgedet bench``: runs on a tiny model, writes valid JSON, the GEMM probe measures something."""

import json

from edgedet.bench import gemm_gflops, time_call
from tests.conftest import assert_user_error, run_cli


def test_gemm_probe_returns_a_positive_rate():
    rate = gemm_gflops(n=256, seconds=0.2)
    assert rate > 0.1


def test_time_call_counts_iterations():
    calls = []
    times = time_call(lambda: calls.append(1), warmup=2, iters=5)
    assert len(times) == 5 and len(calls) == 7 and min(times) >= 0


def test_bench_on_a_tiny_model_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench", "--model", "grid", "--backends", "eager,onnxruntime,torchscript", "--batch", "1,2",
                     "--warmup", "1", "--iters", "3", "--json", str(out))
    assert result.returncode == 0, result.stderr
    records = json.loads(out.read_text())
    assert {(r["backend"], r["batch"]) for r in records} == {(b, n) for b in ("eager", "onnxruntime", "torchscript")
                                                             for n in (1, 2)}
    for r in records:
        assert r["imgsz"] == [48, 60] and r["p50_ms"] > 0 and r["p95_ms"] >= r["p50_ms"] and r["fps"] > 0
        assert r["gemm_gflops"] > 0 and 0 < r["fraction_of_gemm"] and r["gflops"] > 0
    assert "of sgemm" in result.stdout


def test_bench_bad_input(tmp_path):
    assert run_cli("bench").returncode == 2
    assert run_cli("bench", "--model", "grid", "--batch", "0").returncode == 2
    assert_user_error(run_cli("bench", "--model", "nope"), "unknown model")
    assert_user_error(run_cli("bench", "--model", "grid", "--backends", "tensorflow"), "unknown backend")
    assert_user_error(run_cli("bench", str(tmp_path / "missing.onnx")), "does not exist")
