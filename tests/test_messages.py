"""The messages a newcomer meets first: each mistake gets one ``error:`` line that names the real
cause, usage errors exit 2 before anything heavy is imported, and nothing is said twice."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys

import pytest
import torch

from edgedet.export.api import export_model
from edgedet.export.options import ExportOptions
from tests.conftest import cli_in_process as cli
from tests.conftest import REPO, assert_user_error, run_cli


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    out = tmp_path_factory.mktemp("graph")
    export_model("grid", out, ExportOptions(formats=("onnx",)), random_init=True, say=lambda m: None)
    return out / "grid.onnx"


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_val_on_an_exported_graph_points_to_parity_and_run(capsys, graph):
    assert_user_error(cli(capsys, "val", "--weights", str(graph)), "exported graph, not a checkpoint",
                      f"edgedet parity {graph}", "edgedet run")


def test_refusal_is_one_line_without_a_warning_or_torchs_advice(capsys, tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"payload": _Payload()}, protocol=4))  # protocol 4 makes torch warn
    result = cli(capsys, "val", "--weights", str(evil))
    assert_user_error(result, "refusing to load")
    assert "weights_only" not in result.stderr and "Warning" not in result.stderr


def test_a_directory_as_weights_is_called_a_directory(capsys, tmp_path):
    assert_user_error(cli(capsys, "val", "--weights", str(tmp_path)), "is a directory, not a checkpoint")
    assert_user_error(cli(capsys, "train", "--model", "localizer", "--data", "digits-loc", "--weights",
                          str(tmp_path), "--out", str(tmp_path / "run")), "is a directory, not a checkpoint")


def test_random_bytes_as_darknet_weights(capsys, tmp_path):
    junk = tmp_path / "junk.weights"
    junk.write_bytes(bytes((i * 37 + 11) % 256 for i in range(4096)))
    result = cli(capsys, "export", "--model", "yolov3-tiny", "--weights", str(junk), "--out", str(tmp_path / "x"))
    assert_user_error(result, "is not a darknet .weights file (header version ")
    assert "transposed" not in result.stderr


def test_cfg_value_of_the_wrong_type_names_the_field(capsys, tmp_path):
    result = cli(capsys, "train", "--model", "localizer", "--data", "digits-loc", "--cfg", "widths=banana",
                 "--out", str(tmp_path / "run"))
    assert_user_error(result, "--cfg widths: expected a tuple of ints, got 'banana'")


def test_train_without_options_is_a_usage_error_before_torch_loads():
    result = run_cli("train", no_torch=True)  # torch cannot even be imported: the check comes first
    assert result.returncode == 2, result.stderr
    assert "give --model and --data" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_quickstart_on_cuda_without_cuda_fails_before_any_work(capsys, tmp_path):
    out = tmp_path / "qs"
    assert_user_error(cli(capsys, "quickstart", "--device", "cuda", "--out", str(out)), "CUDA is not available")
    assert not out.exists()


def test_cuda_provider_without_a_driver_says_so(graph, monkeypatch):
    import onnxruntime

    import edgedet.runtime.backends.ort as ort_backend
    from edgedet.runtime.backends import BackendUnavailable, create_backend

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider")
    monkeypatch.setattr(ort_backend, "_nvidia_driver_present", lambda: False)
    with pytest.raises(BackendUnavailable, match="no CUDA device or driver on this machine"):
        create_backend(graph, "onnxruntime", providers=["cuda"])


def test_parity_prints_each_skip_reason_once(capsys, graph, monkeypatch):
    import edgedet.runtime.backends.ort as ort_backend

    monkeypatch.setattr(ort_backend, "_nvidia_driver_present", lambda: False)  # GPU rows skip on any machine
    result = cli(capsys, "parity", str(graph))
    skipped = [line.split("SKIPPED", 1)[1].strip() for line in result.stdout.splitlines() if "SKIPPED" in line]
    assert skipped, result.stdout
    for reason in skipped:
        assert (result.stdout + result.stderr).count(reason) == 1, reason


def test_info_without_onnx_says_why_shapes_are_missing(graph, monkeypatch):
    from edgedet.export.info import format_info, graph_info

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    text = format_info(graph_info(graph))
    assert "input/output shapes, opset and operators not shown: needs the onnx package" in text


@pytest.mark.slow
def test_torchrun_user_error_is_one_line_per_process():
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "edgedet", "train", "--model", "localizer", "--data", "nope", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180, cwd=str(REPO))
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert 1 <= len(errors) <= 2 and all("unknown dataset 'nope'" in e for e in errors), proc.stderr
    assert "edgedet/" not in "".join(line for line in proc.stderr.splitlines() if line.strip().startswith("File "))
