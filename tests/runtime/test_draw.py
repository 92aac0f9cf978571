"""Drawing helpers: palette, boxes with tags, mask overlays; no torch needed."""

import subprocess
import sys

import cv2
import numpy as np
import pytest

from edgedet.runtime.draw import draw_detections, draw_label, overlay_mask, palette
from tests.conftest import NO_TORCH_PRELUDE, REPO


def test_palette_is_deterministic_distinct_and_prefix_stable():
    colors = palette(20)
    assert colors == palette(20) and palette(5) == colors[:5]
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors)
    assert len(set(colors)) == 20
    first = np.array(colors[:8], float)
    gaps = np.linalg.norm(first[:, None] - first[None], axis=2) + np.eye(8) * 1e3
    assert gaps.min() > 60
    assert palette(0) == []


def test_draw_detections_in_place_and_returns_image():
    image = np.zeros((120, 160, 3), np.uint8)
    out = draw_detections(image, np.array([[10, 20, 60, 90]], np.float32), np.array([1]),
                          scores=np.array([0.87]), class_names=["cat", "dog"])
    assert out is image
    assert tuple(image[50, 10]) == palette(2)[1]  # left edge of the box in dog's colour
    assert image[20:90, 10:60].any() and not image[100:, 100:].any()


def test_draw_detections_skips_padding_rows_and_converts_grey():
    grey = np.zeros((60, 80), np.uint8)
    out = draw_detections(grey, np.array([[5, 5, 40, 40]]), np.array([-1]))
    assert out.shape == (60, 80, 3) and not out.any()
    out = draw_detections(np.zeros((60, 80, 1), np.uint8), np.zeros((0, 4)), np.zeros(0, np.int64))
    assert out.shape == (60, 80, 3)


@pytest.mark.parametrize("shape", [(24, 30, 3), (1080, 1920, 3)])
def test_tags_stay_inside_small_and_large_images(shape):
    image = np.zeros(shape, np.uint8)
    h, w = shape[:2]
    draw_detections(image, np.array([[0, 0, w, h], [w - 3, h - 3, w, h]], np.float32), np.array([0, 0]),
                    class_names=["a-rather-long-name"])
    assert image.any()


def _label_drawn_in_place(image, text, x, y, color, scale, thickness):
    """The tag as OpenCV draws it straight onto the image (what the cached tags must equal)."""
    h, w = image.shape[:2]
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(1, int(round(th * 0.25)))
    tag_w, tag_h = tw + 2 * pad, th + baseline + pad
    x0 = min(max(x, 0), max(0, w - tag_w))
    y0 = y - tag_h if y - tag_h >= 0 else y
    y0 = min(max(y0, 0), max(0, h - tag_h))
    cv2.rectangle(image, (x0, y0), (x0 + tag_w - 1, y0 + tag_h - 1), color, cv2.FILLED)
    ink = (0, 0, 0) if 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2] > 140 else (255, 255, 255)
    cv2.putText(image, text, (x0 + pad, y0 + pad + th - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness,
                cv2.LINE_AA)
    return image


@pytest.mark.parametrize("shape, x, y", [((480, 640, 3), 100, 200), ((480, 640, 3), 630, 2),
                                         ((20, 30, 3), 3, 3), ((480, 640, 3), -40, 470)])
def test_cached_tags_draw_the_same_pixels_as_opencv_in_place(shape, x, y):
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, shape, dtype=np.uint8)
    for text, color in (("dog 0.87", (40, 200, 250)), ("#12 person 0.50", (120, 20, 60)),
                        ("dog 0.87", (40, 200, 250))):  # the second "dog" comes from the cache
        for scale, thickness in ((0.5, 1), (1.2, 2)):
            ours = draw_label(background.copy(), text, x, y, color, scale, thickness)
            theirs = _label_drawn_in_place(background.copy(), text, x, y, color, scale, thickness)
            assert np.array_equal(ours, theirs), (text, scale)


def test_cached_tags_cannot_be_changed_through_a_drawing():
    image = draw_label(np.zeros((100, 200, 3), np.uint8), "cat 0.90", 10, 50, (0, 255, 0), 0.5, 1)
    image[:] = 7  # the drawing is the caller's; the cached tag behind it is untouched
    again = draw_label(np.zeros((100, 200, 3), np.uint8), "cat 0.90", 10, 50, (0, 255, 0), 0.5, 1)
    assert again.max() == 255 and again[..., 1].max() == 255


def test_overlay_mask_leaves_background_and_ignore_untouched():
    image = np.full((10, 10, 3), 100, np.uint8)
    semantic = np.zeros((10, 10), np.uint8)
    semantic[0, 0] = 1
    semantic[1, 1] = 255
    semantic[2, 2] = 3
    overlay_mask(image, semantic, alpha=0.5)
    colors = palette(3)
    assert tuple(image[5, 5]) == (100, 100, 100) and tuple(image[1, 1]) == (100, 100, 100)
    np.testing.assert_allclose(image[0, 0], (np.array(colors[0]) + 100) / 2, atol=1)
    np.testing.assert_allclose(image[2, 2], (np.array(colors[2]) + 100) / 2, atol=1)
    with pytest.raises(ValueError):
        overlay_mask(image, np.zeros((5, 5), np.uint8))


def test_overlay_accepts_int64_class_maps():
    image = np.zeros((4, 4, 3), np.uint8)
    overlay_mask(image, np.full((4, 4), 300, np.int64))
    assert image.any()


def test_draw_imports_without_torch():
    code = NO_TORCH_PRELUDE + "import edgedet.runtime.draw\nassert 'torch' not in sys.modules\nprint('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_segmentation_overlay_has_a_legend_of_the_classes_present_in_their_colours():
    from edgedet.runtime.draw import draw_legend, mask_legend, overlay_mask, palette

    semantic = np.zeros((120, 160), np.uint8)
    semantic[10:40, 10:40] = 3  # class "2" (names start with background)
    semantic[60:90, 60:90] = 1
    semantic[100:, :] = 255  # ignored: no entry
    names = ["background", "0", "1", "2"]
    legend = mask_legend(semantic, names)
    assert legend == [("0", palette(3)[0]), ("2", palette(3)[2])]
    image = overlay_mask(np.zeros((120, 160, 3), np.uint8), semantic)
    before = image.copy()
    draw_legend(image, legend)
    changed = np.argwhere((image != before).any(axis=2))
    assert changed[:, 1].min() > 100 and changed[:, 0].max() < 60  # top-right corner only
    assert (image == np.array(palette(3)[2], np.uint8)).all(axis=2).any()  # a tag in class 2's colour
    assert mask_legend(np.zeros((4, 4), np.uint8), names) == []
