"""The parity runner's verdicts: what becomes a skip, what fails, which tolerance judges a graph."""

from __future__ import annotations

import pytest

from edgedet.errors import MissingDependencyError
from edgedet.parity.compare import Tolerance
from edgedet.parity.options import ParityOptions
from edgedet.runtime.backends import BackendError, BackendUnavailable


def test_tolerance_overrides_apply_on_top_of_the_precisions_defaults():
    int8 = ParityOptions(atol=0.1).tolerance_for("int8")
    assert int8.atol == 0.1
    # everything else stays int8's: the detection limits are not reset to fp32's
    assert int8.rtol == Tolerance.int8().rtol and int8.score == Tolerance.int8().score
    assert int8.score != Tolerance().score
    fp16 = ParityOptions(rtol=0.5).tolerance_for("fp16")
    assert fp16.rtol == 0.5 and fp16.atol == Tolerance.fp16().atol
    assert ParityOptions().tolerance_for("fp32") == Tolerance()


@pytest.fixture(scope="module")
def grid_onnx(tmp_path_factory):
    from edgedet.export.api import ExportOptions, export_model

    out = tmp_path_factory.mktemp("graph")
    (f,) = export_model("grid", out, ExportOptions(formats=("onnx",), check=False), random_init=True,
                        say=lambda m: None)
    return f.path


@pytest.mark.parametrize("error, status", [
    (BackendUnavailable("execution provider cuda was requested but cannot run here"), "skipped"),
    (MissingDependencyError("opencv is not installed"), "skipped"),
    (BackendError("grid.onnx: ONNX Runtime cannot run it on cpu: bad node"), "fail"),
    (RuntimeError("unexpected"), "fail"),
])
def test_only_cannot_run_here_errors_become_skips(grid_onnx, monkeypatch, error, status):
    import edgedet.parity.runner as runner

    real_open = runner._open

    def open_or_fail(path, backend, providers, meta, max_batch):
        if backend == "opencv":
            raise error
        return real_open(path, backend, providers, meta, max_batch)

    monkeypatch.setattr(runner, "_open", open_or_fail)
    report = runner.check_file(grid_onnx, ParityOptions(samples=1, batch=1, providers=["cpu"]))
    opencv = next(b for b in report.backends if b.backend == "opencv")
    assert opencv.status == status and str(error) in opencv.reason
    assert report.passed is (status == "skipped")  # the CPU provider passes; a failed open fails the file
    assert ("FAIL" in runner.format_report(report)) is (status == "fail")
