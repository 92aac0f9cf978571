"""The OpenVINO backend: the same .onnx files, f32 equal to ONNX Runtime, bf16 only by name and
judged by parity with bf16 tolerances; clear errors when it cannot run."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgedet.errors import MissingDependencyError
from edgedet.runtime.backends import BackendError, BackendUnavailable, create_backend
from tests.conftest import assert_user_error, run_cli
from tests.runtime.conftest import scene

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edgedet[openvino]')")

FAMILIES = ("localizer", "grid", "yolov3-tiny", "unet")


def _frames(backend, n: int = 3) -> np.ndarray:
    h, w = backend.input_size
    return np.stack([scene(h, w, seed=s) for s in range(n)])


@pytest.mark.parametrize("name", FAMILIES)
def test_f32_matches_onnxruntime(graphs, name):
    path = graphs(name)
    ort = create_backend(path, "onnxruntime", "cpu")
    vino = create_backend(path, "openvino")
    assert vino.providers == ["cpu-f32"] and vino.precision == "f32"
    x = _frames(ort)
    expected, got = ort.run(x), vino.run(x)
    assert [o.shape for o in got] == [o.shape for o in expected]
    for out_name, a, b in zip(ort.output_names, expected, got):
        assert a.dtype == b.dtype, out_name
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4, err_msg=out_name)
        else:
            np.testing.assert_array_equal(b, a, err_msg=out_name)
    if "num_dets" in ort.output_names:
        assert expected[ort.output_names.index("num_dets")].sum() > 0  # lively: there is something to compare


def test_batch_is_dynamic_on_openvino(graphs):
    vino = create_backend(graphs("yolov3-tiny"), "openvino")
    x = _frames(vino, 3)
    together = vino.run(x)
    for i in range(3):
        alone = vino.run(x[i:i + 1])
        for a, b in zip(alone, together):
            np.testing.assert_allclose(a[0], b[i], rtol=1e-5, atol=1e-4)


def _has_bf16() -> bool:
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.skipif(not _has_bf16(), reason="this CPU has no bf16 arithmetic (AVX-512 bf16 / AMX)")
def test_bf16_differs_from_f32_and_parity_judges_it_with_bf16_tolerances(tmp_path):
    from edgedet import samples
    from edgedet.export.api import ExportOptions, export_model
    from edgedet.parity.runner import ParityOptions, check_file

    files = export_model("localizer", tmp_path, ExportOptions(formats=("onnx",), check=False),
                         weights=str(samples.checkpoint("localizer")), say=lambda m: None)
    path = files[0].path
    f32, bf16 = create_backend(path, "openvino"), create_backend(path, "openvino-bf16")
    assert bf16.providers == ["cpu-bf16"]
    x = _frames(f32)
    box = f32.output_names.index("box")
    assert not np.array_equal(f32.run(x)[box], bf16.run(x)[box])  # bf16 really computed in bf16
    plain = {b.backend for b in check_file(path, ParityOptions(samples=2, batch=2)).backends}
    assert "openvino-cpu" in plain and "openvino-cpu-bf16" not in plain  # bf16 only when asked for
    report = check_file(path, ParityOptions(samples=2, batch=2, bf16=True))
    rows = {b.backend: b for b in report.backends}
    assert rows["openvino-cpu"].status == "pass" and rows["openvino-cpu"].tolerance == ""
    assert rows["openvino-cpu-bf16"].status == "pass" and rows["openvino-cpu-bf16"].tolerance == "bf16"


@pytest.mark.skipif(not _has_bf16(), reason="this CPU has no bf16 arithmetic (AVX-512 bf16 / AMX)")
def test_bf16_tolerance_still_fails_a_broken_graph(tmp_path):
    """The bf16 judgement is looser, not blind: a graph whose box output is shifted by 3 pixels fails."""
    import onnx
    from onnx import helper, numpy_helper

    from edgedet import samples
    from edgedet.export.api import ExportOptions, export_model
    from edgedet.parity.runner import ParityOptions, check_file

    path = export_model("localizer", tmp_path, ExportOptions(formats=("onnx",), check=False),
                        weights=str(samples.checkpoint("localizer")), say=lambda m: None)[0].path
    graph = onnx.load(path)
    box = next(o for o in graph.graph.output if o.name == "box")
    producer = next(n for n in graph.graph.node if "box" in n.output)
    producer.output[list(producer.output).index("box")] = "box_unshifted"
    graph.graph.initializer.append(numpy_helper.from_array(np.full((1, 4), 3.0, np.float32), "box_shift"))
    graph.graph.node.append(helper.make_node("Add", ["box_unshifted", "box_shift"], [box.name]))
    onnx.save(graph, path)
    report = check_file(path, ParityOptions(samples=2, batch=2, bf16=True))
    rows = {b.backend: b.status for b in report.backends}
    assert rows["openvino-cpu-bf16"] == "fail" and rows["onnxruntime-cpu"] == "fail"


def test_bf16_is_never_silent_without_the_name(graphs):
    assert create_backend(graphs("grid"), "openvino").precision == "f32"


def test_cli_run_on_openvino(graphs, tmp_path):
    out = tmp_path / "dets.jsonl"
    result = run_cli("run", "--model", str(graphs("yolov3-tiny")), "--source", "edgedet/samples/images",
                     "--backend", "openvino", "--save-json", str(out))
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == 5
    assert "cpu-f32" in result.stdout + result.stderr


def test_torchscript_file_on_openvino_is_one_error_line(graphs):
    result = run_cli("run", "--model", str(graphs("grid", "torchscript")), "--source", "edgedet/samples/images",
                     "--backend", "openvino")
    assert_user_error(result, "openvino backend runs .onnx files")


def test_device_it_does_not_have(graphs):
    with pytest.raises(BackendError, match="runs on cpu or gpu, not cuda"):
        create_backend(graphs("grid"), "openvino", "cuda")
    if "GPU" not in ov.Core().available_devices:
        with pytest.raises(BackendUnavailable, match="sees no GPU device"):
            create_backend(graphs("grid"), "openvino", "gpu")


def test_unknown_precision_is_refused(graphs):
    with pytest.raises(BackendError, match="unknown backend 'openvino-f8'"):
        create_backend(graphs("grid"), "openvino-f8")


def test_without_openvino_installed_it_says_what_to_install(graphs, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"edgedet\[openvino\]"):
        create_backend(graphs("grid"), "openvino")


def test_a_graph_openvino_cannot_read_is_unavailable_not_a_crash(tmp_path, graphs):
    import shutil

    broken = tmp_path / "grid.onnx"
    shutil.copy(graphs("grid"), broken)
    from edgedet.runtime.metadata import read_metadata

    meta = read_metadata(broken)
    broken.write_bytes(broken.read_bytes()[: 4096])  # truncated protobuf, metadata already read
    with pytest.raises(BackendUnavailable, match="OpenVINO cannot compile grid.onnx"):
        create_backend(broken, "openvino", metadata=meta)
