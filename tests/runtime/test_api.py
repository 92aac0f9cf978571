"""The Python API: load_model, model(frame), model.stream(source), typed results in source pixels."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgedet.runtime import ExportedModel, Result, load_model
from edgedet.runtime.draw import draw_detections, draw_legend, mask_legend, overlay_mask
from edgedet.runtime.letterbox import letterbox
from edgedet.runtime.results import rle_decode, rle_encode
from edgedet.runtime.sources import SourceError
from tests.runtime.conftest import TEST_CONF, scene

FAMILIES = ["yolov3-tiny", "grid", "localizer", "unet"]  # every family (yolov3-tiny stands for yolov3)


def test_detections_are_the_graph_outputs_mapped_to_source_pixels(graphs):
    model = load_model(graphs("yolov3-tiny"))
    assert isinstance(model, ExportedModel) and model.task == "detection" and len(model.class_names) == 80
    frame = scene(300, 500, seed=1)
    result = model(frame)
    assert isinstance(result, Result) and len(result) > 0 and result.image is frame
    # The same numbers by hand: letterbox, run, undo the letterbox.
    framed, lb = letterbox(frame, model.input_size)
    num, boxes, scores, labels = model.backend.run(framed[None])
    n = int(num[0])
    np.testing.assert_allclose(result.boxes, lb.boxes_to_source(boxes[0, :n]), atol=1e-4)
    np.testing.assert_array_equal(result.labels, labels[0, :n])
    np.testing.assert_allclose(result.scores, scores[0, :n])
    assert result.boxes.dtype == np.float32 and result.labels.dtype == np.int64
    assert (result.boxes[:, [0, 2]] <= 500).all() and (result.boxes[:, [1, 3]] <= 300).all()
    assert (result.scores >= TEST_CONF).all() and not result.raw
    assert result.names == [model.class_names[i] for i in result.labels]
    assert result.image_size == (300, 500)


def test_a_letterboxed_box_maps_back_exactly():
    # A box covering the whole letterboxed content maps onto the whole frame.
    _, lb = letterbox(np.zeros((300, 500, 3), np.uint8), (96, 128))
    content = np.array([[lb.pad_x, lb.pad_y, 128 - lb.pad_x, 96 - lb.pad_y]], np.float32)
    np.testing.assert_allclose(lb.boxes_to_source(content), [[0, 0, 500, 300]], atol=0.5)


def test_conf_filters_on_top_of_the_graph(graphs):
    frame = scene(seed=2)
    everything = load_model(graphs("yolov3-tiny"))(frame)
    strict = load_model(graphs("yolov3-tiny"), conf=float(np.median(everything.scores)))(frame)
    assert 0 < len(strict) < len(everything)


def test_batches_give_what_single_frames_give(graphs):
    model = load_model(graphs("yolov3-tiny"), batch=3)
    frames = [scene(200, 300, seed=s) for s in range(3)]
    batched = model(frames)
    for frame, result in zip(frames, batched):
        alone = model(frame)
        np.testing.assert_array_equal(alone.labels, result.labels)
        np.testing.assert_allclose(alone.boxes, result.boxes, atol=1e-2)


def test_image_paths_and_grey_frames(graphs, tmp_path):
    model = load_model(graphs("grid"))
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), scene(seed=5))
    result = model(str(path))
    assert result.source == str(path) and result.image.shape == (240, 320, 3)
    grey = cv2.cvtColor(scene(seed=5), cv2.COLOR_BGR2GRAY)
    assert model(grey).image_size == (240, 320)
    with pytest.raises(SourceError):
        model(str(tmp_path / "missing.png"))


def test_localizer_gives_at_most_one_box(graphs):
    model = load_model(graphs("localizer"), conf=0.0)
    result = model(scene(seed=3))
    assert result.task == "localization" and len(result) == 1
    assert load_model(graphs("localizer"), conf=1.0)(scene(seed=3)).boxes.shape == (0, 4)


def test_segmentation_mask_is_in_source_pixels(graphs):
    model = load_model(graphs("unet"))
    frame = scene(150, 400, seed=4)
    result = model(frame)
    assert result.task == "segmentation" and len(result) == 0
    assert result.mask.shape == (150, 400) and result.mask.dtype == np.uint8
    framed, lb = letterbox(frame, model.input_size)
    (mask,) = model.backend.run(framed[None])
    np.testing.assert_array_equal(result.mask, lb.mask_to_source(mask[0]))
    counts = result.pixel_counts()
    assert sum(counts.values()) == 150 * 400 and set(counts) <= set(model.class_names)
    assert model.class_names[0] == "background"


def test_raw_graphs_give_thresholded_unsuppressed_candidates(graphs):
    frame = scene(seed=6)
    raw = load_model(graphs("yolov3-tiny", nms=False))(frame)
    nms = load_model(graphs("yolov3-tiny"))(frame)
    assert raw.raw and (raw.scores >= 0.25).all()
    assert len(raw) >= len(nms)  # NMS only removes; the runtime never suppresses


def test_stream_over_a_video(graphs, video):
    model = load_model(graphs("yolov3-tiny"))
    results = list(model.stream(str(video), batch=4))
    assert [r.frame_index for r in results] == list(range(12))
    assert all(r.image.shape == (240, 320, 3) and r.source == str(video) for r in results)
    assert results[3].timestamp == pytest.approx(0.3)
    partial = []
    for r in model.stream(str(video)):  # stopping early stops the capture thread
        partial.append(r)
        if len(partial) == 2:
            break
    assert len(partial) == 2
    assert len(list(model.stream(str(video), max_frames=5, batch=2))) == 5


def test_json_records_and_rle_roundtrip(graphs):
    detections = load_model(graphs("grid"))(scene(seed=7))
    doc = json.loads(json.dumps(detections.to_dict()))
    assert len(doc["detections"]) == len(detections)
    first = doc["detections"][0]
    assert set(first) == {"box", "score", "label", "name"} and first["name"] in ("0", "1")
    segmentation = load_model(graphs("unet"))(scene(seed=7))
    doc = json.loads(json.dumps(segmentation.to_dict()))
    np.testing.assert_array_equal(rle_decode(doc["segmentation"]["rle"]), segmentation.mask)
    mask = np.array([[0, 0, 3], [3, 255, 255]], np.uint8)
    assert rle_encode(mask)["values"] == [0, 3, 255] and rle_encode(mask)["counts"] == [2, 2, 2]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_draws(graphs, name, tmp_path):
    conf = 0.0 if name == "localizer" else None
    model = load_model(graphs(name), conf=conf)
    frame = scene(240, 360, seed=8)
    result = model(frame)
    drawn = result.plot()
    assert drawn is not frame and drawn.shape == frame.shape
    changed = (drawn != frame).any(axis=2)
    if result.mask is not None:
        # The overlay tints exactly the non-background pixels; then the legend names their classes.
        expected = overlay_mask(frame.copy(), result.mask)
        np.testing.assert_array_equal((expected != frame).any(axis=2), result.mask != 0)
        legend = mask_legend(result.mask, model.class_names)
        assert legend and drawn.tolist() == draw_legend(expected, legend).tolist()
    else:
        assert len(result) > 0 and changed.any()
        expected = draw_detections(frame.copy(), result.boxes, result.labels, result.scores, model.class_names)
        np.testing.assert_array_equal(drawn, expected)
    cv2.imwrite(str(tmp_path / f"{name}.png"), drawn)
