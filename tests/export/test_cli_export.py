"""``edgedet export`` and ``edgedet info`` as a user runs them: files, metadata, errors."""

from __future__ import annotations

import json
import zipfile

import onnx
import pytest
import torch

from edgedet.errors import EdgedetError
from edgedet.export.api import ExportOptions, export_model
from edgedet.export.info import graph_info
from edgedet.runtime.metadata import read_metadata
from edgedet.train.checkpoint import load_checkpoint, save_checkpoint
from edgedet.models import create_model
from tests.conftest import assert_user_error, run_cli


@pytest.mark.slow
def test_random_init_export_writes_graphs_checkpoint_and_passes_its_check(tmp_path):
    result = run_cli("export", "--model", "grid", "--random-init", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.onnx", "grid.pt", "grid.torchscript"]
    assert result.stdout.count("PASS") >= 2 and "FAIL" not in result.stdout
    for name in ("grid.onnx", "grid.torchscript"):
        meta = read_metadata(tmp_path / name).doc
        assert meta["model"] == "grid" and meta["task"] == "detection"
        assert meta["class_names"] == ["0", "1"]
        assert meta["input"] == {"name": "images", "layout": "NHWC", "dtype": "uint8", "color": "BGR",
                                 "height": 48, "width": 60, "dynamic_batch": True, "dynamic_size": False,
                                 "size_multiple": 1}
        assert meta["nms"]["max_det"] == 100 and meta["outputs"] == ["num_dets", "boxes", "scores", "labels"]
        # The metadata points at the reference checkpoint, with its checksum.
        assert meta["source"]["kind"] == "random-init"
        assert meta["source"]["checkpoint"] == str((tmp_path / "grid.pt").resolve())
        import hashlib
        assert meta["source"]["sha256"] == hashlib.sha256((tmp_path / "grid.pt").read_bytes()).hexdigest()
    assert load_checkpoint(tmp_path / "grid.pt")["model"] == "grid"


@pytest.mark.slow
def test_info_reports_inputs_outputs_opset_and_operators(tmp_path):
    export_model("unet", tmp_path, ExportOptions(formats=("onnx",), dynamic=True, probs=True, check=False),
                 random_init=True, say=lambda m: None)
    info = graph_info(tmp_path / "unet.onnx")
    assert info["inputs"] == [{"name": "images", "dtype": "uint8", "shape": ["batch", "height", "width", 3]}]
    assert [o["name"] for o in info["outputs"]] == ["mask", "probs"]
    assert info["outputs"][0]["dtype"] == "int64"
    assert info["opset"]["ai.onnx"] == 17
    assert info["operators"]["Conv"] > 5 and info["nodes"] == sum(info["operators"].values())
    text = run_cli("info", str(tmp_path / "unet.onnx"))
    assert text.returncode == 0 and "unet (segmentation)" in text.stdout and "dynamic size" in text.stdout
    as_json = json.loads(run_cli("info", "--json", str(tmp_path / "unet.onnx")).stdout)
    assert as_json["metadata"]["segmentation"] == {"background": 0, "ignore": 255,
                                                   "class_names": as_json["metadata"]["class_names"]}


@pytest.mark.slow
def test_checkpoint_export_and_imgsz(tmp_path):
    torch.manual_seed(1)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", create_model("yolov3-tiny", num_classes=3, width=0.25))
    files = export_model("yolov3-tiny", tmp_path / "out", ExportOptions(imgsz=(96, 128)), weights=str(ckpt),
                         say=lambda m: None)
    assert all(f.check_passed for f in files)
    meta = read_metadata(tmp_path / "out" / "yolov3-tiny.onnx").doc
    assert (meta["input"]["height"], meta["input"]["width"]) == (96, 128)
    assert meta["num_classes"] == 3 and meta["source"]["kind"] == "checkpoint"
    assert meta["strides"] == [32, 16] and len(meta["anchors"]) == 2


@pytest.mark.slow
def test_bad_inputs_give_one_error_line(tmp_path):
    out = str(tmp_path / "out")
    assert_user_error(run_cli("export", "--model", "yolov9", "--random-init", "--out", out),
                      "unknown model 'yolov9'", "yolov3-tiny")
    assert_user_error(run_cli("export", "--model", "grid", "--random-init", "--weights", "x.pt", "--out", out),
                      "contradict")
    assert_user_error(run_cli("export", "--model", "grid", "--weights", str(tmp_path / "missing.pt"), "--out", out),
                      "does not exist")
    assert_user_error(run_cli("export", "--model", "unet", "--random-init", "--format", "tflite", "--out", out),
                      "tflite")
    assert_user_error(run_cli("export", "--model", "grid", "--random-init", "--dynamic", "--out", out),
                      "fixed input size")
    assert_user_error(run_cli("export", "--model", "unet", "--random-init", "--imgsz", "100", "--out", out),
                      "multiple")
    assert_user_error(run_cli("export", "--model", "unet", "--random-init", "--weights", "darknet:yolov3",
                              "--out", out), "contradict")
    assert_user_error(run_cli("export", "--model", "unet", "--weights", "darknet:yolov3", "--out", out),
                      "yolov3")
    assert_user_error(run_cli("export", "--model", "grid", "--random-init", "--no-nms", "--probs", "--out", out),
                      "--probs")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert_user_error(run_cli("export", "--model", "grid", "--random-init", "--out", str(blocker / "sub")),
                      "cannot write")
    usage = run_cli("export", "--model", "grid", "--random-init", "--imgsz", "big", "--out", out)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


@pytest.mark.slow
def test_weights_that_do_not_fit_name_the_tensor(tmp_path):
    ckpt = save_checkpoint(tmp_path / "loc.pt", create_model("localizer"))
    assert_user_error(run_cli("export", "--model", "grid", "--weights", str(ckpt), "--out", str(tmp_path / "o")),
                      "localizer checkpoint, not grid")
    assert_user_error(run_cli("export", "--model", "localizer", "--weights", str(ckpt), "--imgsz", "64,64",
                              "--out", str(tmp_path / "o")), "size mismatch")
    wrong = tmp_path / "tiny.weights"
    wrong.write_bytes(b"\0" * 1000)
    assert_user_error(run_cli("export", "--model", "yolov3-tiny", "--weights", str(wrong), "--out", str(tmp_path / "o")),
                      "floats")


def test_info_rejects_files_that_are_not_edgedet_graphs(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07junk")
    assert_user_error(run_cli("info", str(junk)), "not a readable ONNX")
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 3, 1), (torch.zeros(1, 3, 4, 4),), str(plain), dynamo=False)
    assert_user_error(run_cli("info", str(plain)), "no edgedet metadata")
    zip_path = tmp_path / "x.torchscript"
    with zipfile.ZipFile(zip_path, "w") as z:
        z.writestr("x/data.pkl", b"")
    assert_user_error(run_cli("info", str(zip_path)), "no edgedet metadata")
    assert_user_error(run_cli("info", str(tmp_path / "model.tflite")), "expected .onnx or .torchscript")
    assert_user_error(run_cli("info", str(tmp_path / "missing.onnx")), "does not exist")


def test_interrupted_export_leaves_no_file(tmp_path, monkeypatch):
    calls = []

    def interrupted(module, args, f, **kwargs):
        open(f, "wb").write(b"half a graph")
        calls.append(f)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.onnx, "export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model("grid", tmp_path, ExportOptions(formats=("onnx",)), random_init=True, say=lambda m: None)
    assert calls
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.pt"]  # only the finished checkpoint


def test_unknown_model_in_api_is_an_edgedet_error(tmp_path):
    with pytest.raises(EdgedetError, match="unknown model"):
        export_model("nope", tmp_path, random_init=True, say=lambda m: None)
    assert onnx  # onnx is a test dependency of this module


@pytest.mark.slow
def test_triton_repository(tmp_path):
    result = run_cli("export", "--model", "yolov3-tiny", "--random-init", "--imgsz", "96,128", "--dynamic",
                     "--format", "onnx", "--no-check", "--out", str(tmp_path / "out"),
                     "--triton", str(tmp_path / "repo"))
    assert result.returncode == 0, result.stderr
    model_dir = tmp_path / "repo" / "yolov3-tiny"
    assert (model_dir / "1" / "model.onnx").read_bytes() == (tmp_path / "out" / "yolov3-tiny.onnx").read_bytes()
    config = (model_dir / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 64" in config
    assert "dynamic_batching { }" in config
    # dims exclude the batch; dynamic H/W are -1; num_dets is a per-request scalar.
    assert 'name: "images"\n    data_type: TYPE_UINT8\n    dims: [ -1, -1, 3 ]' in config
    assert 'name: "num_dets"\n    data_type: TYPE_INT64\n    dims: [ 1 ]\n    reshape: { shape: [ ] }' in config
    assert 'name: "boxes"\n    data_type: TYPE_FP32\n    dims: [ 100, 4 ]' in config
    assert_user_error(run_cli("export", "--model", "grid", "--random-init", "--format", "torchscript",
                              "--triton", str(tmp_path / "r2"), "--out", str(tmp_path / "o2")), "--triton")


@pytest.mark.slow
def test_darknet_weights_export(tmp_path):
    from edgedet.models.darknet import save_darknet_weights

    torch.manual_seed(2)
    weights = save_darknet_weights(create_model("yolov3-tiny"), tmp_path / "tiny.weights")
    result = run_cli("export", "--model", "yolov3-tiny", "--weights", str(weights), "--imgsz", "160",
                     "--format", "onnx", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stdout and "FAIL" not in result.stdout
    meta = read_metadata(tmp_path / "out" / "yolov3-tiny.onnx").doc
    assert meta["source"]["kind"] == "darknet" and meta["source"]["weights"] == str(weights.resolve())
    assert meta["class_names"][0] == "person" and meta["num_classes"] == 80


@pytest.mark.slow
def test_int8_export_loads_runs_and_is_smaller(tmp_path):
    result = run_cli("export", "--model", "yolov3-tiny", "--random-init", "--imgsz", "96,128", "--format", "onnx",
                     "--int8", "--calib-samples", "4", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    fp32, int8 = tmp_path / "yolov3-tiny.onnx", tmp_path / "yolov3-tiny.int8.onnx"
    assert int8.stat().st_size < fp32.stat().st_size / 3
    meta = read_metadata(int8).doc
    assert meta["precision"] == "int8" and meta["quantization"]["calibration_frames"] == 4
    graph = onnx.load(str(int8))
    assert any(n.op_type == "QuantizeLinear" for n in graph.graph.node)
    import numpy as np
    import onnxruntime as ort

    out = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(
        None, {"images": np.full((3, 96, 128, 3), 114, np.uint8)})
    assert [o.shape for o in out] == [(3,), (3, 100, 4), (3, 100), (3, 100)]
    for args, fragment in ((["--int8", "--format", "torchscript"], "--int8"), (["--int8", "--half"], "contradict"),
                           (["--calib-data", "clutter"], "--calib-data"), (["--int8", "--calib-data", "nope"], "nope")):
        assert_user_error(run_cli("export", "--model", "grid", "--random-init", "--out", str(tmp_path / "x"), *args),
                          fragment)
    assert not (tmp_path / "x" / "grid.onnx").exists()


def test_no_weights_uses_the_shipped_checkpoint_else_says_what_to_pass(tmp_path, monkeypatch):
    import edgedet.models.weights as weights
    from edgedet.runtime.files import file_digest
    from edgedet.samples import checkpoint

    notes = []
    files = export_model("grid", tmp_path / "a", ExportOptions(formats=("onnx",), check=False), say=notes.append)
    assert any("shipped with edgedet" in n for n in notes)
    assert read_metadata(files[0].path).source.sha256 == file_digest(checkpoint("grid"))
    monkeypatch.setattr(weights, "shipped_checkpoint", lambda name: None)
    with pytest.raises(EdgedetError, match="--weights.*--random-init"):
        export_model("unet", tmp_path / "b", ExportOptions(formats=("onnx",)), say=lambda m: None)
