"""Triton repositories never overwrite a model, names stay inside the repository, files are readable."""

from __future__ import annotations

import ast
import stat
from pathlib import Path

import pytest

from edgedet.export import info as export_info
from edgedet.export.options import ExportError, ExportOptions
from edgedet.export.triton import TritonError, write_triton_repository
from edgedet.runtime import files
from edgedet.runtime.files import UnsafeNameError
from tests.conftest import assert_user_error, cli_in_process, run_cli

PYTHON_MODEL = Path(export_info.__file__).with_name("triton_python_model.py")

INPUTS = [{"name": "images", "dtype": "uint8", "shape": ["batch", 96, 128, 3]}]
OUTPUTS = [{"name": "num_dets", "dtype": "int64", "shape": ["batch"]},
           {"name": "boxes", "dtype": "float32", "shape": ["batch", 100, 4]}]


@pytest.fixture
def graph(tmp_path, monkeypatch):
    """A stand-in ONNX file whose inputs and outputs :func:`graph_info` reports as given."""
    shapes = {"outputs": OUTPUTS}
    monkeypatch.setattr(export_info, "graph_info", lambda path: {"inputs": INPUTS, "outputs": shapes["outputs"]})
    path = tmp_path / "model.onnx"
    path.write_bytes(b"graph v1")
    return path, shapes


def test_a_new_model_gets_version_1_readable_per_the_umask(graph, tmp_path):
    path, _ = graph
    written = write_triton_repository(path, tmp_path / "repo", "det")
    assert written.version == 1 and written.new_model and "version 1" in written.note
    for f in (tmp_path / "repo" / "det" / "config.pbtxt", tmp_path / "repo" / "det" / "1" / "model.onnx"):
        assert stat.S_IMODE(f.stat().st_mode) == files.file_mode()
    assert 'name: "det"' in (tmp_path / "repo" / "det" / "config.pbtxt").read_text()


def test_exporting_again_adds_a_version_and_keeps_the_old_one(graph, tmp_path):
    path, _ = graph
    repo = tmp_path / "repo"
    write_triton_repository(path, repo, "det")
    config = (repo / "det" / "config.pbtxt").read_text()
    path.write_bytes(b"graph v2")
    written = write_triton_repository(path, repo, "det")
    assert written.version == 2 and not written.new_model
    assert "added version 2" in written.note and "config unchanged" in written.note
    assert (repo / "det" / "1" / "model.onnx").read_bytes() == b"graph v1"
    assert (repo / "det" / "2" / "model.onnx").read_bytes() == b"graph v2"
    assert (repo / "det" / "config.pbtxt").read_text() == config


def test_a_model_with_another_config_is_refused_and_left_alone(graph, tmp_path):
    path, shapes = graph
    repo = tmp_path / "repo"
    write_triton_repository(path, repo, "det")
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    shapes["outputs"] = OUTPUTS[:1]
    with pytest.raises(TritonError, match="different config.pbtxt"):
        write_triton_repository(path, repo, "det")
    assert {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (repo / "det").iterdir()) == ["1", "config.pbtxt"]


def test_the_python_backend_puts_model_py_beside_the_same_graph(graph, tmp_path):
    path, _ = graph
    written = write_triton_repository(path, tmp_path / "repo", "det", backend="python")
    assert written.version == 1 and "python backend" in written.note
    version = tmp_path / "repo" / "det" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "model.py"]
    assert (version / "model.onnx").read_bytes() == b"graph v1"
    assert (version / "model.py").read_bytes() == PYTHON_MODEL.read_bytes()
    for f in (version / "model.py", tmp_path / "repo" / "det" / "config.pbtxt"):
        assert stat.S_IMODE(f.stat().st_mode) == files.file_mode()
    config = (tmp_path / "repo" / "det" / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "platform" not in config and "dynamic_batching" in config


def test_the_python_model_needs_neither_edgedet_nor_torch():
    """model.py runs inside Triton's Python backend, where only numpy, onnxruntime and the
    backend's own utilities are promised."""
    tree = ast.parse(PYTHON_MODEL.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"json", "os", "numpy", "onnxruntime", "triton_python_backend_utils"}


def test_a_model_of_the_same_name_for_another_backend_is_refused_and_left_alone(graph, tmp_path):
    path, _ = graph
    repo = tmp_path / "repo"
    write_triton_repository(path, repo, "det")
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    with pytest.raises(TritonError, match="different config.pbtxt"):
        write_triton_repository(path, repo, "det", backend="python")
    assert {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (repo / "det").iterdir()) == ["1", "config.pbtxt"]


def test_an_unknown_triton_backend_is_a_usage_error(capsys, tmp_path):
    result = cli_in_process(capsys, "export", "--model", "grid", "--random-init", "--out", str(tmp_path / "out"),
                            "--triton", str(tmp_path / "repo"), "--triton-backend", "banana")
    assert result.returncode == 2 and "--triton-backend" in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())
    with pytest.raises(ExportError, match="--triton-backend banana"):
        ExportOptions(triton=str(tmp_path / "repo"), triton_backend="banana").validate("grid")


def test_the_python_backend_without_a_repository_is_refused(capsys, tmp_path):
    result = cli_in_process(capsys, "export", "--model", "grid", "--random-init", "--out", str(tmp_path / "out"),
                            "--triton-backend", "python")
    assert_user_error(result, "--triton-backend python", "--triton DIR")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs", "..", "", "with space", 'quo"te', ".hidden"])
def test_model_names_cannot_leave_the_repository(graph, tmp_path, name):
    path, _ = graph
    with pytest.raises(UnsafeNameError):
        write_triton_repository(path, tmp_path / "repo", name)
    assert not (tmp_path / "repo").exists() and not (tmp_path / "escape").exists()


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", ".."])
def test_export_name_must_be_a_name(tmp_path, name):
    result = run_cli("export", "--model", "grid", "--random-init", "--out", str(tmp_path / "out"), "--name", name)
    assert_user_error(result, "--name")
    assert not any(tmp_path.rglob("*"))  # refused before anything was loaded or written


def test_export_triton_name_and_folder_are_checked_first(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = run_cli("export", "--model", "grid", "--random-init", "--out", str(tmp_path / "out"),
                     "--triton", str(afile / "repo"))
    assert_user_error(result, "cannot write to", "afile")
    assert "export" not in result.stdout.lower()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["afile", "out"]


@pytest.mark.slow
@pytest.mark.parametrize("model, options", [
    ("yolov3-tiny", {"imgsz": (96, 128), "dynamic": True}),
    ("yolov3-tiny", {"imgsz": (96, 128), "nms": None}),
    ("grid", {}),
    ("localizer", {}),
    ("unet", {"imgsz": (64, 64), "probs": True}),
    ("grid", {"triton_backend": "python"}),
])
def test_every_config_parses_with_tritons_own_schema(tmp_path, model, options):
    """Triton's ``ModelConfig`` protobuf, parsed strictly from text as the server does: an unknown
    field or a malformed value fails here, not when the server loads the repository."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                           reason="tritonclient[grpc] (dev extra) is not installed")
    from google.protobuf import text_format

    from edgedet.export.api import ExportOptions, export_model
    from edgedet.export.info import graph_info

    (onnx_file,) = export_model(model, tmp_path / "out", ExportOptions(formats=("onnx",), check=False,
                                                                       triton=str(tmp_path / "repo"), **options),
                                random_init=True, say=lambda m: None)
    config = text_format.Parse((tmp_path / "repo" / model / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    info = graph_info(onnx_file.path)
    assert config.name == model and config.max_batch_size > 0
    if options.get("triton_backend") == "python":
        assert config.backend == "python" and not config.platform
    else:
        assert config.platform == "onnxruntime_onnx" and not config.backend
    assert config.HasField("dynamic_batching")
    types = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "int64": "TYPE_INT64"}
    for declared, actual in ((config.input, info["inputs"]), (config.output, info["outputs"])):
        assert [t.name for t in declared] == [t["name"] for t in actual]
        for t, a in zip(declared, actual):
            assert model_config_pb2.DataType.Name(t.data_type) == types[a["dtype"]]
            dims = [d if isinstance(d, int) else -1 for d in a["shape"][1:]]  # Triton's dims leave out the batch
            assert list(t.dims) == (dims or [1]) and (t.HasField("reshape") == (not dims))
