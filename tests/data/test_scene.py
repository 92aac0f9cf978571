"""``digits-scene``: several digits-loc-style digits over clutter, for the fully convolutional localizer."""

import numpy as np
import pytest

from edgedet.data import build_dataset
from edgedet.data.synthetic import _overlap
from edgedet.errors import DataError
from tests.conftest import assert_sample_contract, assert_user_error, cli_in_process

SCENE = "digits-scene:glyphs=builtin"


@pytest.fixture(scope="module")
def scenes():
    dataset = build_dataset(SCENE, split="val")
    return dataset, [dataset[i] for i in range(12)]


def test_scene_samples_keep_the_contract(scenes):
    dataset, samples = scenes
    assert dataset.task == "detection" and dataset.image_size == (240, 320) and len(dataset) == 2000
    for sample in samples:
        assert_sample_contract(dataset, sample)
        assert sample["image"].shape == (240, 320, 1)
        assert 0 < len(sample["labels"]) <= 8
    assert max(len(s["labels"]) for s in samples) >= 4  # several digits, not one


def test_digits_rarely_overlap_and_look_like_digits_loc(scenes):
    _, samples = scenes
    for sample in samples:
        boxes = sample["boxes"]
        for i in range(len(boxes)):
            for j in range(i):
                assert _overlap(*boxes[i], tuple(boxes[j])) <= 0.1
        heights = boxes[:, 3] - boxes[:, 1]
        assert (heights >= 10).all() and (heights <= 48).all()  # ink 14..36 px, warped: fits one window


def test_scenes_are_deterministic_per_index_and_split(scenes):
    _, samples = scenes
    again = build_dataset(SCENE, split="val")
    for i in (0, 7):
        for key in ("image", "boxes", "labels"):
            np.testing.assert_array_equal(again[i][key], samples[i][key])
    train = build_dataset(SCENE, split="train")[0]
    assert not np.array_equal(train["image"], samples[0]["image"])
    other_seed = build_dataset(SCENE + ",seed=1", split="val")[0]
    assert not np.array_equal(other_seed["image"], samples[0]["image"])


def test_scene_options():
    dataset = build_dataset(SCENE + ",size=96x128,max_digits=3,min_digits=3,n=5", split="train")
    assert len(dataset) == 5 and dataset.image_size == (96, 128)
    for i in range(5):
        sample = dataset[i]
        assert sample["image"].shape == (96, 128, 1)
        assert len(sample["labels"]) <= 3
        assert_sample_contract(dataset, sample)
    assert build_dataset(SCENE + ",size=480", split="val")[0]["image"].shape == (480, 480, 1)


@pytest.mark.parametrize("spec, fragment", [
    (SCENE + ",size=40x50", "at least 48x60"),
    (SCENE + ",max_digits=0", "max_digits"),
    (SCENE + ",min_digits=5,max_digits=2", "min_digits"),
    (SCENE + ",corners=3", "unknown option 'corners'"),
])
def test_bad_scene_specs(spec, fragment):
    with pytest.raises(DataError, match=fragment):
        build_dataset(spec)[0]


def test_preview_cli(capsys, tmp_path):
    import cv2

    out = tmp_path / "scene.png"
    result = cli_in_process(capsys, "data", "preview", "--data", SCENE, "--out", str(out))
    assert result.returncode == 0, result.stderr
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.std() > 10
    bad = cli_in_process(capsys, "data", "preview", "--data", "digits-scene:size=10", "--out", str(tmp_path / "b.png"))
    assert_user_error(bad, "at least 48x60")
    assert not (tmp_path / "b.png").exists()
