"""Instance masks in the runtime: COCO RLE against faster-coco-eval, the mapping back through the
letterbox, the output check and the drawing."""

from __future__ import annotations

import numpy as np
import pytest
from faster_coco_eval.core import mask as coco_mask

from edgedet.runtime.draw import draw_instance_masks, palette
from edgedet.runtime.letterbox import Letterbox, letterbox
from edgedet.runtime.masks import (InstanceMasks, check_masks_output, counts_to_string, decode_mask, encode_mask,
                                   masks_to_source, rle_counts, string_to_counts)


def reference_encode(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def reference_decode(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})


def edge_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    cases = {}
    for h, w in [(1, 1), (1, 9), (9, 1), (13, 17), (240, 320)]:
        cases[f"empty {h}x{w}"] = np.zeros((h, w), np.uint8)
        cases[f"full {h}x{w}"] = np.ones((h, w), np.uint8)
        cases[f"noise {h}x{w}"] = (rng.random((h, w)) < 0.5).astype(np.uint8)
    edges = np.zeros((31, 23), np.uint8)
    edges[0, 0] = edges[-1, -1] = 1  # the first and last pixel in COCO's column-major order
    edges[:, 0] = 1  # the whole first column
    edges[5:9, -1] = 1  # the last column
    cases["touching every edge"] = edges
    top_left = np.zeros((17, 29), np.uint8)
    top_left[:6, :4] = 1
    cases["block at the top-left corner"] = top_left
    bottom_right = np.zeros((17, 29), np.uint8)
    bottom_right[12:, 25:] = 1
    cases["block at the bottom-right corner"] = bottom_right
    # Runs far longer than one 5-bit group, and differences of both signs (counts[i] - counts[i-2]).
    big = np.zeros((1000, 1200), np.uint8)
    big[400:403, 500:900] = 1
    big[100:800, 1100] = 1
    cases["long runs"] = big
    return cases


CASES = edge_cases()


@pytest.mark.parametrize("name", list(CASES))
def test_rle_matches_coco(name):
    mask = CASES[name]
    ours = encode_mask(mask)
    assert ours == reference_encode(mask)  # the same string as COCO's own encoder
    np.testing.assert_array_equal(reference_decode(ours), mask)  # and COCO's decoder reads it back
    np.testing.assert_array_equal(decode_mask(reference_encode(mask)), mask)


def test_rle_counts_are_column_major_from_a_zero_run():
    mask = np.array([[1, 0, 0],
                     [1, 1, 0]], np.uint8)
    # Column-major: 1 1 | 0 1 | 0 0 -> a 0-run of length 0 first, then 2 ones, 1 zero, 1 one, 2 zeros.
    assert rle_counts(mask.astype(bool)) == [0, 2, 1, 1, 2]
    assert string_to_counts(counts_to_string([0, 2, 1, 1, 2])) == [0, 2, 1, 1, 2]


def test_negative_count_differences_round_trip():
    counts = [5, 1000, 3, 2, 70000, 1, 1, 40]  # 2 - 1000 and 1 - 70000 are negative differences
    assert string_to_counts(counts_to_string(counts)) == counts
    rle = {"size": [sum(counts), 1], "counts": counts_to_string(counts)}
    flat = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).ravel()
    assert flat.sum() == 1000 + 2 + 1 + 40 and flat[:5].sum() == 0 and flat[5:1005].all()


def test_decode_refuses_counts_that_do_not_fill_the_frame():
    with pytest.raises(ValueError, match="cover"):
        decode_mask({"size": [4, 4], "counts": [3, 2]})


@pytest.mark.parametrize("origin", [(0, 0), (25, 0), (0, 11), (25, 11), (7, 3)])
def test_instance_rle_from_a_crop_equals_the_full_frame_encoding(origin):
    rng = np.random.default_rng(sum(origin))
    size, (x0, y0) = (17, 29), origin
    crop = rng.random((6, 4)) < 0.6
    crop[0, 0] = crop[-1, -1] = True  # the crop's own corners touch the frame's edges at these origins
    masks = InstanceMasks(size, np.array([origin]), [crop])
    full = np.zeros(size, np.uint8)
    full[y0:y0 + 6, x0:x0 + 4] = crop
    np.testing.assert_array_equal(masks.full(0), full.astype(bool))
    assert masks.rle(0) == reference_encode(full)


def test_empty_crop_encodes_an_empty_frame():
    masks = InstanceMasks((5, 6), np.array([[2, 1]]), [np.zeros((0, 3), bool)])
    assert masks.rle(0) == reference_encode(np.zeros((5, 6), np.uint8))
    assert masks.areas().tolist() == [0]


def test_select_keeps_rows_in_order():
    crops = [np.ones((1, k), bool) for k in (1, 2, 3)]
    masks = InstanceMasks((4, 4), np.array([[0, 0], [1, 1], [0, 2]]), crops)
    picked = masks.select(np.array([True, False, True]))
    assert picked.areas().tolist() == [1, 3] and picked.origins.tolist() == [[0, 0], [0, 2]]
    assert len(InstanceMasks.empty((4, 4)).select(np.zeros(0, bool))) == 0


# ---------------------------------------------------------------------------------------------
# Mapping back through the letterbox


def test_identity_scale_with_padding_is_exact():
    # A 96x128 frame in a 128x128 input: scale 1, 16 rows of padding above and below.
    rng = np.random.default_rng(0)
    frame_masks = (rng.random((3, 96, 128)) < 0.5).astype(np.uint8)
    boxes = np.array([[0, 0, 40, 30], [100, 70, 128, 96], [10.4, 20.6, 60.2, 50.5]], np.float32)
    _, lb = letterbox(np.zeros((96, 128, 3), np.uint8), (128, 128))
    assert (lb.scale, lb.pad_x, lb.pad_y) == (1.0, 0, 16)
    graph = np.zeros((3, 128, 128), np.uint8)
    graph[:, 16:112] = frame_masks
    graph[:, :16] = graph[:, 112:] = 1  # the padding must never leak into a mask
    mapped = masks_to_source(graph, boxes, lb, (128, 128))
    # Kept: the pixels whose centre lies in the box (10.4 <= x + 0.5 < 60.2: x 10..59).
    for i, (x1, y1, x2, y2) in enumerate([(0, 0, 40, 30), (100, 70, 128, 96), (10, 21, 60, 50)]):
        expected = np.zeros((96, 128), bool)
        expected[y1:y2, x1:x2] = frame_masks[i, y1:y2, x1:x2]
        np.testing.assert_array_equal(mapped.full(i), expected)


@pytest.mark.parametrize("interpolation", ["nearest", "linear"])
def test_enlarging_a_rectangle_doubles_its_corners(interpolation):
    # A 64x96 frame letterboxed into a 40x48 input: scale 0.5, 4 rows of padding on top.
    _, lb = letterbox(np.zeros((64, 96, 3), np.uint8), (40, 48))
    assert (lb.scale, lb.pad_x, lb.pad_y) == (0.5, 0, 4)
    graph = np.zeros((1, 40, 48), np.uint8)
    graph[0, 4 + 5:4 + 11, 6:12] = 1  # rows 5..10, columns 6..11 of the frame's half-size image
    mapped = masks_to_source(graph, np.array([[0, 0, 96, 64]], np.float32), lb, (40, 48), interpolation)
    expected = np.zeros((64, 96), bool)
    expected[10:22, 12:24] = True
    np.testing.assert_array_equal(mapped.full(0), expected)


def test_nearest_enlargement_repeats_pixels():
    rng = np.random.default_rng(3)
    small = (rng.random((20, 30)) < 0.5).astype(np.uint8)
    lb = Letterbox(scale=0.5, pad_x=0, pad_y=0, source_size=(40, 60))
    mapped = masks_to_source(small[None], np.array([[0, 0, 60, 40]], np.float32), lb, (20, 30), "nearest")
    np.testing.assert_array_equal(mapped.full(0), np.kron(small, np.ones((2, 2), np.uint8)).astype(bool))


@pytest.mark.parametrize("interpolation", ["nearest", "linear"])
def test_masks_at_a_quarter_of_the_input_resolution(interpolation):
    lb = Letterbox(scale=1.0, pad_x=0, pad_y=0, source_size=(32, 32))
    graph = np.zeros((1, 8, 8), np.uint8)
    graph[0, 1:3, 2:5] = 1
    mapped = masks_to_source(graph, np.array([[0, 0, 32, 32]], np.float32), lb, (32, 32), interpolation)
    expected = np.zeros((32, 32), bool)
    expected[4:12, 8:20] = True
    if interpolation == "linear":
        # A corner pixel samples 0.625 of the way into the rectangle in x and in y: 0.625^2 < 0.5.
        expected[[4, 4, 11, 11], [8, 19, 8, 19]] = False
    np.testing.assert_array_equal(mapped.full(0), expected)


def test_masks_stay_inside_their_boxes_and_degenerate_boxes_give_empty_masks():
    lb = Letterbox(scale=1.0, pad_x=0, pad_y=0, source_size=(20, 20))
    graph = np.ones((2, 20, 20), np.uint8)  # a graph that did not crop
    boxes = np.array([[5, 6, 9, 8], [7, 7, 7, 12]], np.float32)
    mapped = masks_to_source(graph, boxes, lb, (20, 20))
    assert mapped.areas().tolist() == [4 * 2, 0]
    assert mapped.origins.tolist()[0] == [5, 6] and mapped.full(0)[6:8, 5:9].all()
    assert mapped.rle(1) == reference_encode(np.zeros((20, 20), np.uint8))


def test_clutter_frame_through_a_shrinking_letterbox():
    from edgedet.data.synthetic import Clutter

    sample = Clutter(size=320, max_digits=10, glyphs="builtin")[8]
    gt, gt_boxes = sample["masks"], sample["boxes"]
    assert len(gt) == 8
    size = (160, 224)  # scale 0.5 and 32 columns of padding each side
    graph = np.stack([letterbox(m[..., None], size, 0)[0][..., 0] for m in gt])
    _, lb = letterbox(sample["image"], size)
    assert (lb.scale, lb.pad_x, lb.pad_y) == (0.5, 32, 0)
    mapped = masks_to_source(graph, gt_boxes, lb, size)
    for i in range(len(gt)):
        got, want = mapped.full(i), gt[i].astype(bool)
        iou = (got & want).sum() / (got | want).sum()
        assert iou > 0.75, (i, iou)  # thin strokes halved and doubled again; a shifted mask scores ~0


# ---------------------------------------------------------------------------------------------
# The output check


def test_check_masks_output_accepts_the_contract_and_names_what_is_wrong():
    boxes = np.zeros((2, 5, 4), np.float32)
    check_masks_output(np.zeros((2, 5, 64, 96), np.uint8), boxes, (64, 96))
    check_masks_output(np.zeros((2, 5, 16, 24), np.uint8), boxes, (64, 96))  # a lower resolution
    check_masks_output(np.zeros((2, 5, 16, 24), np.uint8), boxes, (64, 96), (16, 24))
    bad = {
        "float32": (np.zeros((2, 5, 64, 96), np.float32), None),
        "3-d": (np.zeros((2, 5, 64), np.uint8), None),
        "K": (np.zeros((2, 4, 64, 96), np.uint8), None),
        "larger than the input": (np.zeros((2, 5, 128, 96), np.uint8), None),
        "other aspect": (np.zeros((2, 5, 16, 96), np.uint8), None),
        "not the documented size": (np.zeros((2, 5, 64, 96), np.uint8), (16, 24)),
    }
    for case, (masks, resolution) in bad.items():
        with pytest.raises(ValueError, match="masks"):
            check_masks_output(masks, boxes, (64, 96), resolution)
            pytest.fail(case)


# ---------------------------------------------------------------------------------------------
# Drawing


def test_draw_instance_masks_tints_only_the_mask_in_its_class_colour():
    image = np.full((60, 80, 3), 100, np.uint8)
    crop = np.zeros((10, 12), bool)
    crop[2:8, 3:9] = True
    masks = InstanceMasks((60, 80), np.array([[30, 40]]), [crop])
    drawn = draw_instance_masks(image.copy(), masks, np.array([2]), ["a", "b", "c"], legend=False)
    inside = drawn[40 + 4, 30 + 5].astype(float)
    expected = 100 * 0.55 + np.array(palette(3)[2], float) * 0.45
    np.testing.assert_allclose(inside, expected, atol=1.0)
    changed = np.any(drawn != image, axis=2)
    ys, xs = np.nonzero(changed)
    # Fill plus an anti-aliased outline: nothing beyond a pixel or two around the mask changes.
    assert ys.min() >= 40 + 2 - 2 and ys.max() <= 40 + 7 + 2 and xs.min() >= 30 + 3 - 2 and xs.max() <= 30 + 8 + 2


def test_draw_instance_masks_uses_track_colours_and_draws_a_legend():
    from edgedet.runtime.draw import detection_colors

    image = np.zeros((120, 160, 3), np.uint8)
    crop = np.ones((20, 20), bool)
    masks = InstanceMasks((120, 160), np.array([[10, 80], [50, 80]]), [crop, crop])
    colors = detection_colors(np.array([0, 0]), ["zero"], np.array([7, -1]))
    assert colors[0] != colors[1] and colors[1] == palette(1)[0]
    drawn = draw_instance_masks(image.copy(), masks, np.array([0, 0]), ["zero"], np.array([7, -1]))
    np.testing.assert_allclose(drawn[90, 20], np.array(colors[0]) * 0.45, atol=1.0)
    np.testing.assert_allclose(drawn[90, 60], np.array(colors[1]) * 0.45, atol=1.0)
    assert drawn[:20, -60:].any()  # the legend ("zero x2") in the top-right corner
    with pytest.raises(ValueError, match="frame"):
        draw_instance_masks(np.zeros((10, 10, 3), np.uint8), masks, np.array([0, 0]))
