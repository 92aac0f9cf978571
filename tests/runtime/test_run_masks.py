"""``edgedet run`` on instance-segmentation graphs: masks drawn, COCO RLE in the JSON lines.

The graphs here are built with ``onnx.helper``: whatever frame comes in, they emit the detector
outputs plus ``masks`` of known instances (the ground truth of an MNIST-Clutter frame, placed as
the letterbox places that frame), with the metadata document an exported instance segmenter
carries. So the masks the run writes can be checked against the ground truth, decoded by
faster-coco-eval, not by the code under test.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from faster_coco_eval.core import mask as coco_mask
from onnx import TensorProto, helper, numpy_helper

from edgedet import __version__
from edgedet.runtime.letterbox import letterbox
from tests.conftest import REPO, assert_user_error, run_cli
from tests.runtime.test_cli_run import follow_fifo, json_lines, processed, video_frames

DIGITS = tuple(str(d) for d in range(10))
K = 12  # rows per image, as an exported graph pads to max_det


def clutter_sample(index: int = 8, size: int = 320) -> dict:
    from edgedet.data.synthetic import Clutter

    return Clutter(size=size, max_digits=10, glyphs="builtin")[index]


def graph_outputs(masks: np.ndarray, boxes: np.ndarray, labels: np.ndarray, frame_size: tuple[int, int],
                  input_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """One image's contract outputs for instances given in frame pixels, letterboxed into ``input_size``."""
    _, lb = letterbox(np.zeros((*frame_size, 3), np.uint8), input_size)
    n = len(masks)
    out_masks = np.zeros((K, *input_size), np.uint8)
    out_boxes = np.zeros((K, 4), np.float32)
    for i in range(n):
        out_masks[i] = letterbox(masks[i][..., None], input_size, 0)[0][..., 0]
        out_boxes[i] = boxes[i] * lb.scale + [lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y]
        x1, y1, x2, y2 = out_boxes[i]
        ys, xs = np.mgrid[:input_size[0], :input_size[1]] + 0.5
        out_masks[i] *= (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)  # cropped to the box, as graphs do
    scores = np.zeros(K, np.float32)
    scores[:n] = np.linspace(0.9, 0.5, n)
    out_labels = np.full(K, -1, np.int64)
    out_labels[:n] = labels
    return {"num_dets": np.array(n, np.int64), "boxes": out_boxes, "scores": scores, "labels": out_labels,
            "masks": out_masks}


def metadata_doc(input_size: tuple[int, int], outputs: list[str], masks: dict | None) -> dict:
    """The metadata document of an exported detector (schema 1), with the instance-mask contract."""
    h, w = input_size
    doc = {
        "schema": 1, "edgedet_version": __version__, "format": "onnx", "model": "yolov3-tiny-seg",
        "family": "yolov3", "task": "detection", "class_names": list(DIGITS), "num_classes": 10,
        "input": {"name": "images", "layout": "NHWC", "dtype": "uint8", "color": "BGR", "height": h, "width": w,
                  "dynamic_batch": True, "dynamic_size": False, "size_multiple": 32},
        "letterbox": {"method": "letterbox", "pad_value": [114, 114, 114], "stride": 32},
        "outputs": outputs, "precision": "fp32",
        "nms": {"conf": 0.25, "iou": 0.45, "max_det": K, "max_candidates": 1000, "agnostic": False},
        "config": {}, "source": {"kind": "random-init"}, "export_args": {"test": True},
    }
    if masks is not None:
        doc["masks"] = masks
    return doc


MASK_CONTRACT = {"output": "masks", "dtype": "uint8", "shape": "[B, K, H, W]", "resolution": "input",
                 "upsample": "bilinear x2 of the prototype logits", "crop": "pixel centres inside the box",
                 "threshold": 0.5, "prototypes": 16, "proto_stride": 2}


def constant_graph(path: Path, outputs: dict[str, np.ndarray], input_size: tuple[int, int],
                   metadata: dict | None = None, names: list[str] | None = None) -> Path:
    """An ONNX graph giving every image of a batch the same ``outputs`` (each [1, ...] broadcast to B)."""
    names = names or list(outputs)
    nodes = [helper.make_node("Shape", ["images"], ["shape"]),
             helper.make_node("Slice", ["shape", "zero", "one"], ["batch"])]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    graph_outs = []
    for name in names:
        value = outputs[name][None]
        inits.append(numpy_helper.from_array(value, f"{name}_value"))
        inits.append(numpy_helper.from_array(np.array(value.shape[1:], np.int64), f"{name}_rest"))
        nodes.append(helper.make_node("Concat", ["batch", f"{name}_rest"], [f"{name}_shape"], axis=0))
        nodes.append(helper.make_node("Expand", [f"{name}_value", f"{name}_shape"], [name]))
        dtype = helper.np_dtype_to_tensor_dtype(value.dtype)
        graph_outs.append(helper.make_tensor_value_info(name, dtype, ["B", *value.shape[1:]]))
    graph = helper.make_graph(nodes, "constant", [helper.make_tensor_value_info(
        "images", TensorProto.UINT8, ["B", *input_size, 3])], graph_outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    doc = metadata if metadata is not None else metadata_doc(input_size, names, MASK_CONTRACT)
    helper.set_model_props(model, {"edgedet": json.dumps(doc)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def decode(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})


@pytest.fixture(scope="module")
def clutter(tmp_path_factory):
    """A 320x320 clutter frame on disk, its ground truth, and a graph that 'finds' its 8 digits."""
    root = tmp_path_factory.mktemp("clutter")
    sample = clutter_sample()
    assert len(sample["labels"]) == 8
    image = root / "clutter.png"
    cv2.imwrite(str(image), sample["image"])
    exact = constant_graph(root / "exact.onnx", graph_outputs(sample["masks"], sample["boxes"], sample["labels"],
                                                              (320, 320), (352, 320)), (352, 320))
    shrunk = constant_graph(root / "shrunk.onnx", graph_outputs(sample["masks"], sample["boxes"],
                                                                sample["labels"], (320, 320), (160, 224)), (160, 224))
    return {"sample": sample, "image": image, "exact": exact, "shrunk": shrunk, "root": root}


def test_masks_in_json_lines_are_the_instances(clutter, tmp_path):
    sample = clutter["sample"]
    out, js = tmp_path / "drawn.png", tmp_path / "masks.jsonl"
    result = run_cli("run", "--model", str(clutter["exact"]), "--source", str(clutter["image"]),
                     "--save", str(out), "--save-json", str(js))
    assert result.returncode == 0, result.stderr
    (record,) = json_lines(js)
    dets = record["detections"]
    assert [d["label"] for d in dets] == sample["labels"].tolist()
    for det, gt, box in zip(dets, sample["masks"], sample["boxes"]):
        assert det["mask"]["size"] == [320, 320]
        # Scale 1, 16 rows of padding above and below: the mapping back is exact.
        np.testing.assert_array_equal(decode(det["mask"]), gt)
        np.testing.assert_allclose(det["box"], box, atol=0.01)
    counts = {}
    for label in sample["labels"].tolist():
        counts[str(label)] = counts.get(str(label), 0) + 1
    line = next(l for l in result.stdout.splitlines() if l.startswith("masks"))
    assert line == "masks     " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "  (instances per class)"
    # The annotated image: masked pixels tinted, pixels outside every box untouched (PNG is lossless).
    drawn, original = cv2.imread(str(out)), sample["image"]
    inside = np.any(sample["masks"], axis=0)
    outside = np.ones((320, 320), bool)
    for x1, y1, x2, y2 in sample["boxes"].astype(int):
        outside[max(0, y1 - 30):y2 + 3, max(0, x1 - 3):max(x2 + 3, x1 + 90)] = False  # box, outline, tag
    outside[:140, 200:] = False  # the legend (six classes)
    changed = np.any(drawn != original, axis=2)
    assert not changed[outside].any()
    assert changed[inside].mean() > 0.95


def test_a_shrinking_letterbox_maps_masks_back(clutter, tmp_path):
    sample = clutter["sample"]
    js = tmp_path / "masks.jsonl"
    result = run_cli("run", "--model", str(clutter["shrunk"]), "--source", str(clutter["image"]),
                     "--save-json", str(js))
    assert result.returncode == 0, result.stderr
    (record,) = json_lines(js)
    ious = []
    for det, gt in zip(record["detections"], sample["masks"]):
        got = decode(det["mask"]).astype(bool)
        ious.append((got & gt.astype(bool)).sum() / (got | gt.astype(bool)).sum())
    assert len(ious) == 8 and min(ious) > 0.75, ious  # halved and doubled again; misplaced would be ~0


def test_masks_at_a_documented_lower_resolution(clutter, tmp_path):
    # The graph gives its masks at half the input's resolution and says so in the metadata.
    sample = clutter["sample"]
    outputs = graph_outputs(sample["masks"], sample["boxes"], sample["labels"], (320, 320), (320, 320))
    full = outputs["masks"]
    outputs["masks"] = np.ascontiguousarray(
        (full.reshape(K, 160, 2, 160, 2).mean(axis=(2, 4)) >= 0.5).astype(np.uint8))
    doc = metadata_doc((320, 320), list(outputs), dict(MASK_CONTRACT, resolution=[160, 160],
                                                       upsample="bilinear x2, half-pixel centres"))
    graph = constant_graph(tmp_path / "half.onnx", outputs, (320, 320), metadata=doc)
    js = tmp_path / "half.jsonl"
    result = run_cli("run", "--model", str(graph), "--source", str(clutter["image"]), "--save-json", str(js))
    assert result.returncode == 0, result.stderr
    (record,) = json_lines(js)
    for det, gt in zip(record["detections"], sample["masks"].astype(bool)):
        got = decode(det["mask"]).astype(bool)
        assert (got & gt).sum() / (got | gt).sum() > 0.75
    info = run_cli("info", str(graph))
    assert "masks       uint8 0/1 per detection at 160x160 (to the input: bilinear x2, half-pixel centres)" \
        in info.stdout, info.stdout
    # A graph whose masks are not at the resolution its metadata documents is refused.
    wrong = metadata_doc((320, 320), list(outputs), dict(MASK_CONTRACT, resolution=[80, 80]))
    assert_user_error(run_cli("run", "--model", str(constant_graph(tmp_path / "wrong.onnx", outputs, (320, 320),
                                                                   metadata=wrong)),
                              "--source", str(clutter["image"])), "the metadata says 80x80")


def test_batch_several_sources_tracking_video_and_images(clutter, tmp_path):
    # Two sources (a video of the clutter frame, an image folder), batch 2, tracked: every record's
    # detections keep their masks, with their track ids, and the masks are the frame's instances.
    sample = clutter["sample"]
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (320, 320))
    for _ in range(4):
        writer.write(sample["image"])
    writer.release()
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"p{i}.png"), sample["image"])
    listing = tmp_path / "sources.txt"
    listing.write_text(f"{clip}\n{folder}\n")
    out, js = tmp_path / "tracked.mp4", tmp_path / "tracked.jsonl"
    result = run_cli("run", "--model", str(clutter["exact"]), "--source", str(listing), "--batch", "2",
                     "--track", "--save", str(out), "--save-json", str(js))
    assert result.returncode == 0, result.stderr
    records = json_lines(js)
    assert processed(result.stdout) == len(records) == 7
    gt = [m for m in sample["masks"]]
    for record in records:
        dets = record["detections"]
        assert len(dets) == 8
        for det, mask in zip(dets, gt):
            np.testing.assert_array_equal(decode(det["mask"]), mask)
    later = [r for r in records if r["frame"] > 0]
    assert all(d["track_id"] is not None for r in later for d in r["detections"])
    assert video_frames(tmp_path / "tracked_0.mp4")[0] == 4 and video_frames(tmp_path / "tracked_1.mp4")[0] == 3
    line = next(l for l in result.stdout.splitlines() if l.startswith("masks"))
    assert sum(int(part.split()[1]) for part in line[10:].split("  (")[0].split(", ")) == 7 * 8


def test_conf_filter_drops_masks_with_their_boxes(clutter, tmp_path):
    js = tmp_path / "conf.jsonl"
    result = run_cli("run", "--model", str(clutter["exact"]), "--source", str(clutter["image"]), "--conf", "0.7",
                     "--save-json", str(js))
    assert result.returncode == 0, result.stderr
    (record,) = json_lines(js)
    scores = np.linspace(0.9, 0.5, 8)
    kept = np.flatnonzero(scores >= 0.7)
    assert [d["score"] for d in record["detections"]] == pytest.approx(scores[kept].tolist(), abs=1e-5)
    for det, i in zip(record["detections"], kept):
        np.testing.assert_array_equal(decode(det["mask"]), clutter["sample"]["masks"][i])


def test_python_api_results_carry_masks(clutter):
    from edgedet.runtime import load_model

    sample = clutter["sample"]
    model = load_model(clutter["exact"])
    try:
        result = model(sample["image"])
        batch = model([sample["image"], sample["image"][:160]])  # a second frame of another size
    finally:
        model.close()
    np.testing.assert_array_equal(result.masks.to_array(), sample["masks"].astype(bool))
    assert [d["mask"] for d in result.to_dict()["detections"]] == [d["mask"] for d in batch[0].to_dict()["detections"]]
    assert batch[1].masks.size == (160, 320) and len(batch[1].masks) == len(batch[1])
    assert result.plot().shape == (320, 320, 3)


def test_a_frame_without_detections_has_no_masks(tmp_path):
    empty = graph_outputs(np.zeros((0, 64, 64), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                          (64, 64), (64, 64))
    graph = constant_graph(tmp_path / "empty.onnx", empty, (64, 64))
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), np.full((64, 64, 3), 90, np.uint8))
    js = tmp_path / "none.jsonl"
    result = run_cli("run", "--model", str(graph), "--source", str(frame), "--save-json", str(js))
    assert result.returncode == 0, result.stderr
    assert json_lines(js)[0]["detections"] == []
    assert "masks     none  (instances per class)" in result.stdout


def test_info_shows_the_masks_output(clutter):
    result = run_cli("info", str(clutter["exact"]))
    assert result.returncode == 0, result.stderr
    assert "output      masks uint8 ['B', 12, 352, 320]" in result.stdout
    assert "masks       uint8 0/1 per detection at input resolution (352x320), cropped to boxes" in result.stdout


# ---------------------------------------------------------------------------------------------
# Bad input


def bad_graph(tmp_path: Path, case: str) -> Path:
    sample = clutter_sample(index=1, size=96)
    outputs = graph_outputs(sample["masks"], sample["boxes"], sample["labels"], (96, 96), (96, 96))
    detector = ["num_dets", "boxes", "scores", "labels"]
    if case == "claims masks, lacks the output":
        return constant_graph(tmp_path / "g.onnx", outputs, (96, 96), names=detector)
    if case == "float masks":
        outputs["masks"] = outputs["masks"].astype(np.float32)
    elif case == "masks of the wrong size":
        outputs["masks"] = outputs["masks"][:, :48]
    elif case == "masks of another K":
        outputs["masks"] = outputs["masks"][:5]
    elif case == "masks beside raw candidates":
        outputs["predictions"] = np.zeros((30, 15), np.float32)
        return constant_graph(tmp_path / "g.onnx", outputs, (96, 96), names=["predictions", "masks"])
    return constant_graph(tmp_path / "g.onnx", outputs, (96, 96))


BAD_GRAPHS = {
    "claims masks, lacks the output": "no masks output",
    "float masks": "float32",
    "masks of the wrong size": "48x96",
    "masks of another K": "does not match boxes",
    "masks beside raw candidates": "needs the detector outputs",
}


@pytest.mark.parametrize("case", list(BAD_GRAPHS))
def test_a_bad_masks_graph_is_one_error_line_and_writes_nothing(clutter, tmp_path, case):
    graph = bad_graph(tmp_path, case)
    out, js = tmp_path / "never.png", tmp_path / "never.jsonl"
    result = run_cli("run", "--model", str(graph), "--source", str(clutter["image"]), "--save", str(out),
                     "--save-json", str(js))
    assert_user_error(result, BAD_GRAPHS[case])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx"]  # nothing written, no temporaries


def test_unwritable_save_json_is_one_error_line(clutter, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert_user_error(run_cli("run", "--model", str(clutter["exact"]), "--source", str(clutter["image"]),
                              "--save-json", str(blocker / "masks.jsonl")), "masks.jsonl")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_user_error(run_cli("run", "--model", str(clutter["exact"]), "--source", str(clutter["image"]),
                                  "--save-json", str(locked / "masks.jsonl")), "masks.jsonl")


def live_graph(tmp_path: Path) -> tuple[Path, dict]:
    # The test camera's 120x160 frames: the graph's instances are those of a 120x160 clutter frame.
    sample = clutter_sample(index=3, size=(120, 160))
    graph = constant_graph(tmp_path / "live.onnx", graph_outputs(sample["masks"], sample["boxes"], sample["labels"],
                                                                 (120, 160), (128, 160)), (128, 160))
    return graph, sample


def check_live_records(records: list[dict], sample: dict) -> None:
    for record in records:
        assert len(record["detections"]) == len(sample["labels"])
        for det, gt in zip(record["detections"], sample["masks"]):
            np.testing.assert_array_equal(decode(det["mask"]), gt)


def test_interrupt_leaves_a_json_lines_file_of_whole_records(mjpeg_server, tmp_path):
    import time

    graph, sample = live_graph(tmp_path)
    server = mjpeg_server(interval=0.02, max_seconds=60)
    out = tmp_path / "out"
    out.mkdir()
    js = out / "live.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "edgedet", "run", "--model", str(graph), "--source", server.url,
                             "--save-json", str(js), "--timeout", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        # Wait until the temporary beside the target holds a few records, then interrupt.
        while not any(p.name.startswith(".live.jsonl") and p.stat().st_size > 3000 for p in out.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped by SIGINT" in stdout
    assert [p.name for p in out.iterdir()] == ["live.jsonl"]  # renamed into place, no temporary left
    text = js.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == processed(stdout) >= 1
    check_live_records(records, sample)


def test_interrupt_leaves_well_formed_json_lines_with_masks(mjpeg_server, tmp_path):
    graph, sample = live_graph(tmp_path)
    server = mjpeg_server(interval=0.02, max_seconds=60)
    js = tmp_path / "live.jsonl"
    lines = follow_fifo(js)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "edgedet", "run", "--model", str(graph), "--source", server.url,
                             "--save-json", str(js), "--timeout", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    records = []
    try:
        while len(records) < 3:
            try:
                line = lines.get(timeout=60)
            except queue.Empty:
                proc.kill()
                pytest.fail(f"no JSON line within 60 s: {proc.communicate()}")
            assert line is not None, proc.communicate()
            records.append(json.loads(line))
        proc.send_signal(signal.SIGINT)
        while (line := lines.get(timeout=60)) is not None:
            records.append(json.loads(line))  # every line, the last included, is a whole JSON document
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and len(records) == processed(stdout) >= 3
    check_live_records(records, sample)


# ---------------------------------------------------------------------------------------------
# The registered instance segmenter, exported


@pytest.fixture(scope="module")
def seg_graphs(tmp_path_factory) -> dict[str, Path]:
    """``yolov3-tiny-seg`` exported (lively random weights, see tests/conftest.py) at a 96x128 input."""
    from tests.runtime.conftest import export_graph

    root = tmp_path_factory.mktemp("seg")
    return {fmt: export_graph("yolov3-tiny-seg", root, fmt, imgsz=(96, 128)) for fmt in ("onnx", "torchscript")}


def test_exported_yolov3_tiny_seg_through_edgedet_run(seg_graphs, tmp_path):
    import onnxruntime as ort

    # A 96x128 clutter frame: the letterbox is the identity, so each JSON mask must be exactly the
    # graph's own mask row (read here with ONNX Runtime directly) and each box the graph's box.
    frame = clutter_sample(index=2, size=(96, 128))["image"]
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), frame)
    session = ort.InferenceSession(str(seg_graphs["onnx"]), providers=["CPUExecutionProvider"])
    raw = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": frame[None]})))
    n = int(raw["num_dets"][0])
    assert n > 0 and raw["masks"].dtype == np.uint8 and raw["masks"].shape[2:] == (96, 128)
    assert raw["masks"][0, :n].any(axis=(1, 2)).sum() >= 2  # several non-empty masks to compare
    records = {}
    for fmt, graph in seg_graphs.items():
        js = tmp_path / f"{fmt}.jsonl"
        result = run_cli("run", "--model", str(graph), "--source", str(path), "--save", str(tmp_path / f"{fmt}.png"),
                         "--save-json", str(js))
        assert result.returncode == 0, result.stderr
        assert re.search(r"^masks     \S", result.stdout, re.MULTILINE), result.stdout
        (records[fmt],) = json_lines(js)
    dets = records["onnx"]["detections"]
    assert len(dets) == n
    for i, det in enumerate(dets):
        np.testing.assert_array_equal(decode(det["mask"]), raw["masks"][0, i])
        np.testing.assert_allclose(det["box"], raw["boxes"][0, i], atol=0.01)
    # The TorchScript file gives the same instances through the same runtime path.
    ts = records["torchscript"]["detections"]
    assert len(ts) == n
    for a, b in zip(dets, ts):
        got, want = decode(b["mask"]).astype(bool), decode(a["mask"]).astype(bool)
        union = (got | want).sum()
        assert union == 0 or (got & want).sum() >= 0.99 * union  # both empty agree too


def test_exported_yolov3_tiny_seg_on_a_larger_frame_keeps_masks_in_their_boxes(seg_graphs, tmp_path):
    sample = clutter_sample()
    path = tmp_path / "clutter.png"
    cv2.imwrite(str(path), sample["image"])
    js = tmp_path / "seg.jsonl"
    result = run_cli("run", "--model", str(seg_graphs["onnx"]), "--source", str(path), "--save-json", str(js))
    assert result.returncode == 0, result.stderr
    (record,) = json_lines(js)
    assert record["detections"]
    for det in record["detections"]:
        mask = decode(det["mask"])
        assert mask.shape == (320, 320)
        x1, y1, x2, y2 = det["box"]
        ys, xs = np.nonzero(mask)
        if len(ys):  # every set pixel's centre lies inside the box
            assert xs.min() + 0.5 >= x1 and xs.max() + 0.5 <= x2 and ys.min() + 0.5 >= y1 and ys.max() + 0.5 <= y2
