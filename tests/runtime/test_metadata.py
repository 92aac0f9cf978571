"""Graph metadata: the one reader checks the document and gives a typed object, or one clear error."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path
from typing import Any, Callable

import cv2
import onnx
import pytest

from edgedet import __version__
from edgedet.runtime.metadata import (METADATA_KEY, SCHEMA_VERSION, TORCHSCRIPT_EXTRA_FILE, GraphFileError,
                                      InputSpec, NmsSpec, read_metadata)
from tests.conftest import assert_user_error, run_cli
from tests.runtime.conftest import scene


def write_onnx(path: Path, text: str) -> Path:
    """A one-node ONNX file whose edgedet metadata is ``text``."""
    from onnx import TensorProto, helper

    spec = [helper.make_tensor_value_info(n, TensorProto.UINT8, ["batch", 2, 2, 3]) for n in ("images", "out")]
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g", spec[:1], spec[1:])
    model = helper.make_model(graph)
    helper.set_model_props(model, {METADATA_KEY: text})
    onnx.save(model, str(path))
    return path


def write_torchscript(path: Path, text: str) -> Path:
    """A zip laid out as a TorchScript archive, holding only the edgedet extra file."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"graph/extra/{TORCHSCRIPT_EXTRA_FILE}", text)
    return path


def write_graph(path: Path, doc: Any) -> Path:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return write_onnx(path, text) if path.suffix == ".onnx" else write_torchscript(path, text)


@pytest.fixture(scope="module")
def grid_doc(graphs) -> dict[str, Any]:
    """The document ``edgedet export`` writes for a detector (with NMS)."""
    return copy.deepcopy(read_metadata(graphs("grid")).doc)


def _edit(doc: dict[str, Any], where: str, value: Any = None, drop: bool = False) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, key = where.split(".")
    obj = doc
    for parent in parents:
        obj = obj[parent]
    if drop:
        del obj[key]
    else:
        obj[key] = value
    return doc


def test_exported_detector_reads_back_typed(graphs):
    meta = read_metadata(graphs("grid"))
    doc = meta.doc
    assert meta.schema == doc["schema"] == SCHEMA_VERSION
    assert (meta.model, meta.family, meta.task) == ("grid", "grid", "detection")
    assert meta.edgedet_version == __version__ and meta.precision == "fp32"
    assert meta.class_names == tuple(doc["class_names"]) and meta.num_classes == len(meta.class_names)
    assert meta.input == InputSpec(**doc["input"]) and meta.input.size == (doc["input"]["height"],
                                                                            doc["input"]["width"])
    assert meta.letterbox.pad_value == (114, 114, 114)
    assert meta.nms == NmsSpec(**doc["nms"])
    assert meta.outputs == ("num_dets", "boxes", "scores", "labels")
    assert meta.source.kind == "random-init" and meta.source.file is None
    assert meta.segmentation is None and meta.config == doc["config"]
    assert "grid" in meta.doc  # family extras stay in the raw document


def test_exported_segmenter_reads_back_typed(graphs):
    meta = read_metadata(graphs("unet"))
    assert meta.task == "segmentation" and meta.nms is None
    assert meta.segmentation is not None and meta.segmentation.class_names == meta.class_names
    assert (meta.segmentation.background, meta.segmentation.ignore) == (0, 255)


@pytest.mark.parametrize("suffix", [".onnx", ".torchscript"])
def test_round_trip_through_either_file_format(grid_doc, tmp_path, suffix):
    meta = read_metadata(write_graph(tmp_path / f"model{suffix}", grid_doc))
    assert meta.doc == grid_doc
    assert meta == read_metadata(write_graph(tmp_path / f"again{suffix}", meta.doc))


def test_documents_without_a_schema_are_schema_1(grid_doc, tmp_path):
    old = _edit(grid_doc, "schema", drop=True)
    meta = read_metadata(write_graph(tmp_path / "old.onnx", old))
    assert meta.schema == 1 and meta.model == "grid" and meta.nms == NmsSpec(**grid_doc["nms"])


def test_unknown_keys_are_ignored(grid_doc, tmp_path):
    newer = _edit(_edit(grid_doc, "future", {"anything": [1, 2]}), "input.future", "x")
    meta = read_metadata(write_graph(tmp_path / "newer.onnx", newer))
    assert meta == read_metadata(write_graph(tmp_path / "plain.onnx", grid_doc))
    assert meta.doc["future"] == {"anything": [1, 2]}


def test_graphs_without_nms_and_a_single_pad_value(grid_doc, tmp_path):
    doc = _edit(_edit(grid_doc, "nms", None), "letterbox.pad_value", 0)
    meta = read_metadata(write_graph(tmp_path / "raw.onnx", doc))
    assert meta.nms is None and meta.letterbox.pad_value == (0, 0, 0)


def test_missing_field_names_the_file_the_field_and_the_versions(grid_doc, tmp_path):
    doc = _edit(_edit(grid_doc, "input.height", drop=True), "edgedet_version", "0.0.9")
    path = write_graph(tmp_path / "x.onnx", doc)
    with pytest.raises(GraphFileError) as caught:
        read_metadata(path)
    assert str(caught.value) == (f"{path}: edgedet metadata field input.height is missing "
                                 f"(written by edgedet 0.0.9; this is {__version__})")


BAD: dict[str, tuple[Callable[[dict], Any], str]] = {
    "missing task": (lambda d: _edit(d, "task", drop=True), "field task is missing"),
    "missing nms setting": (lambda d: _edit(d, "nms.iou", drop=True), "field nms.iou is missing"),
    "missing source": (lambda d: _edit(d, "source", drop=True), "field source is missing"),
    "height as text": (lambda d: _edit(d, "input.height", "96"),
                       "field input.height should be an integer, not the string '96'"),
    "height as a flag": (lambda d: _edit(d, "input.height", True), "field input.height should be an integer"),
    "input not an object": (lambda d: _edit(d, "input", [96, 128]), "field input should be an object, not a list"),
    "conf as text": (lambda d: _edit(d, "nms.conf", "high"), "field nms.conf should be a number"),
    "class ids for names": (lambda d: _edit(d, "class_names", [0, 1]), "field class_names should be a list of strings"),
    "outputs null": (lambda d: _edit(d, "outputs", None), "field outputs should be a list of strings, not null"),
    "schema as text": (lambda d: _edit(d, "schema", "1"), "field schema should be an integer"),
    "newer schema": (lambda d: _edit(d, "schema", SCHEMA_VERSION + 1),
                     f"schema {SCHEMA_VERSION + 1} is newer than the schema {SCHEMA_VERSION} this edgedet reads"),
    "not JSON": (lambda d: "{'model': grid", "edgedet metadata is not valid JSON"),
    "not an object": (lambda d: "[1, 2, 3]", "edgedet metadata is not a JSON object"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_documents_give_one_clear_error(grid_doc, tmp_path, case):
    mutate, fragment = BAD[case]
    path = write_graph(tmp_path / "bad.torchscript", mutate(grid_doc))
    with pytest.raises(GraphFileError) as caught:
        read_metadata(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and fragment in message, message


def test_newer_schema_says_to_upgrade(grid_doc, tmp_path):
    path = write_graph(tmp_path / "future.onnx", _edit(grid_doc, "schema", SCHEMA_VERSION + 1))
    with pytest.raises(GraphFileError, match="upgrade edgedet"):
        read_metadata(path)


def test_cli_on_a_graph_whose_metadata_lacks_a_field(graphs, tmp_path):
    model = onnx.load(str(graphs("grid")))
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    entry.value = json.dumps(_edit(json.loads(entry.value), "input.height", drop=True))
    path = tmp_path / "broken.onnx"
    onnx.save(model, str(path))
    image = tmp_path / "frame.jpg"
    cv2.imwrite(str(image), scene(120, 160))
    for args in (["info", str(path)], ["run", "--model", str(path), "--source", str(image)]):
        assert_user_error(run_cli(*args), str(path), "field input.height is missing")
