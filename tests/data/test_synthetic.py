"""Synthetic digit sets: the sample contract, determinism, splits and each set's own rules."""

import gzip
import hashlib
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edgedet.data import Clutter, DigitsGrid, DigitsLocalization, build_dataset
from edgedet.data.glyphs import load_mnist, mnist_available, read_idx, render_builtin_glyphs
from edgedet.errors import DataError
from tests.conftest import REPO, assert_sample_contract

SYNTHETIC = ["digits-loc:glyphs=builtin", "digits-grid:glyphs=builtin", "clutter:glyphs=builtin"]


def sample_digest(sample: dict) -> str:
    digest = hashlib.sha256()
    for key in ("image", "boxes", "labels", "masks", "semantic"):
        if key in sample:
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(sample[key]).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("spec", SYNTHETIC)
def test_samples_keep_the_contract(spec):
    dataset = build_dataset(spec + ",n=40")
    assert len(dataset) == 40
    for i in range(len(dataset)):
        assert_sample_contract(dataset, dataset[i])
    assert dataset[0]["id"] == 0


@pytest.mark.parametrize("spec", SYNTHETIC)
def test_same_index_gives_identical_sample(spec):
    a, b = build_dataset(spec), build_dataset(spec)
    for i in (0, 7, 9999):
        assert sample_digest(a[i]) == sample_digest(a[i]) == sample_digest(b[i])


def test_samples_are_identical_in_a_fresh_process():
    indices = [0, 3, 1234]
    here = [sample_digest(build_dataset(spec)[i]) for spec in SYNTHETIC for i in indices]
    code = f"""
import hashlib, numpy as np
from edgedet.data import build_dataset
from tests.data.test_synthetic import sample_digest
print(' '.join(sample_digest(build_dataset(spec)[i]) for spec in {SYNTHETIC!r} for i in {indices!r}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == here


@pytest.mark.parametrize("spec", SYNTHETIC)
def test_train_and_val_and_seeds_differ(spec):
    train, val = build_dataset(spec, "train"), build_dataset(spec, "val")
    reseeded = build_dataset(spec + ",seed=1")
    assert len(train) == 10000 and len(val) == 2000
    for i in range(5):
        assert sample_digest(train[i]) != sample_digest(val[i])
        assert sample_digest(train[i]) != sample_digest(reseeded[i])


def test_indexing_rules():
    dataset = DigitsLocalization(n=5, glyphs="builtin")
    assert sample_digest(dataset[-1]) == sample_digest(dataset[4])
    assert sample_digest(dataset[np.int64(2)]) == sample_digest(dataset[2])
    with pytest.raises(IndexError):
        dataset[5]
    assert len(list(dataset)) == 5


def test_digits_loc_has_zero_or_one_digit_and_some_empty_images():
    dataset = DigitsLocalization(n=200, glyphs="builtin")
    counts = np.array([len(dataset[i]["labels"]) for i in range(len(dataset))])
    assert set(counts.tolist()) <= {0, 1}
    assert 0.12 < (counts == 0).mean() < 0.4
    assert dataset[0]["image"].shape == (48, 60, 1)
    labels = np.concatenate([dataset[i]["labels"] for i in range(len(dataset))])
    assert len(np.unique(labels)) == 10


@pytest.mark.parametrize("cls", [DigitsLocalization, DigitsGrid])
def test_boxes_are_tight_around_the_drawn_digits(cls, monkeypatch):
    # On a black, noise-free background the image is the drawn ink alone: every box must hold
    # all of its digit's strong ink and be no larger than the digit's faintest trace.
    import edgedet.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "_grey_background", lambda rng, h, w: np.zeros((h, w), np.float32))
    monkeypatch.setattr(synthetic, "_noise", lambda rng, h, w: np.zeros((h, w), np.float32))
    dataset = cls(n=40, glyphs="builtin", **({"empty": 0.0} if cls is DigitsLocalization else {}))
    for i in range(len(dataset)):
        sample = dataset[i]
        image = sample["image"][..., 0]
        for box in sample["boxes"].astype(int):
            x1, y1, x2, y2 = box
            crop = image[y1:y2, x1:x2]
            # The box touches ink on all four sides...
            assert crop[0].max() > 40 and crop[-1].max() > 40
            assert crop[:, 0].max() > 40 and crop[:, -1].max() > 40
            # ...and nothing bright lies just outside it, unless another digit is there.
            if len(sample["boxes"]) == 1:
                outside = image.copy()
                outside[y1:y2, x1:x2] = 0
                assert outside.max() < 0.45 * image.max()


def test_digits_grid_has_at_most_one_digit_per_cell_with_its_centre_inside():
    dataset = DigitsGrid(n=150, glyphs="builtin")
    assert dataset.class_names == ("0", "1") and dataset.image_size == (48, 60)
    total = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        cells = [dataset.cell_of(box) for box in sample["boxes"]]
        assert len(cells) == len(set(cells)) <= 6
        for (row, col), box in zip(cells, sample["boxes"]):
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            assert 0 <= row < 2 and 0 <= col < 3
            assert col * 20 <= cx < (col + 1) * 20 and row * 24 <= cy < (row + 1) * 24
        total += len(cells)
    assert 1.5 < total / len(dataset) < 4.5


def test_clutter_masks_boxes_and_semantic_agree():
    dataset = Clutter(n=30, glyphs="builtin", max_digits=6)
    assert dataset.has_masks and dataset.task == "segmentation" and dataset.image_size == (128, 128)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample["image"].shape == (128, 128, 3)
        masks = sample["masks"].astype(bool)
        assert len(masks) <= 6
        # Instance masks are what is visible: they never overlap, each is big enough to learn.
        assert (masks.sum(axis=0) <= 1).all()
        assert (masks.reshape(len(masks), -1).sum(axis=1) >= 20).all()
        for mask, label in zip(masks, sample["labels"]):
            assert (sample["semantic"][mask] == label + 1).all()


def test_clutter_size_option():
    dataset = build_dataset("clutter:glyphs=builtin,size=64x96,max_digits=2,n=5")
    assert dataset.image_size == (64, 96)
    for i in range(5):
        assert_sample_contract(dataset, dataset[i])
        assert len(dataset[i]["labels"]) <= 2


@pytest.mark.parametrize("kwargs", [{"n": -1}, {"seed": -2}, {"glyphs": "typewriter"}, {"empty": 1.5}])
def test_bad_digit_options_raise(kwargs):
    with pytest.raises(DataError):
        DigitsLocalization(**{"glyphs": "builtin", **kwargs})


def test_clutter_rejects_bad_size():
    with pytest.raises(DataError, match="size"):
        Clutter(size=8, glyphs="builtin")
    with pytest.raises(DataError, match="max_digits"):
        Clutter(max_digits=0, glyphs="builtin")


def test_builtin_glyphs_are_varied_mnist_like_digits():
    bank = render_builtin_glyphs(per_digit=6, seed=3)
    assert bank.images.shape == (60, 28, 28) and bank.images.dtype == np.uint8
    assert bank.source == "builtin"
    for digit in range(10):
        group = bank.images[bank.by_digit[digit]]
        assert len(group) == 6
        assert (group.max(axis=(1, 2)) == 255).all()
        # Centred like MNIST: the digit fits a ~20x20 box and its centre of mass is the middle.
        for glyph in group:
            x, y, w, h = cv2.boundingRect((glyph > 40).astype(np.uint8))
            assert max(w, h) <= 23
            m = cv2.moments(glyph.astype(np.float32))
            assert abs(m["m10"] / m["m00"] - 14) < 1.5 and abs(m["m01"] / m["m00"] - 14) < 1.5
        assert len({g.tobytes() for g in group}) == 6
    again = render_builtin_glyphs(per_digit=6, seed=3)
    np.testing.assert_array_equal(bank.images, again.images)


def _write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A tiny MNIST in torchvision's layout (gzipped train, plain test) under EDGEDET_MNIST_ROOT."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    labels = np.repeat(np.arange(10), 3)
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for image, label in zip(images, labels):
        cv2.putText(image, str(label), (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
    _write_idx(raw / "train-images-idx3-ubyte.gz", images, gz=True)
    _write_idx(raw / "train-labels-idx1-ubyte.gz", labels, gz=True)
    _write_idx(raw / "t10k-images-idx3-ubyte", images[::-1], gz=False)
    _write_idx(raw / "t10k-labels-idx1-ubyte", labels[::-1], gz=False)
    monkeypatch.setenv("EDGEDET_MNIST_ROOT", str(tmp_path))
    return tmp_path


def test_mnist_glyphs_are_read_from_disk(fake_mnist):
    assert mnist_available()
    train, val = load_mnist(split="train"), load_mnist(split="val")
    assert train.images.shape == (30, 28, 28) and train.source == "mnist"
    np.testing.assert_array_equal(val.images, train.images[::-1])
    dataset = build_dataset("digits-loc:glyphs=auto,n=20")
    assert dataset.glyphs == "mnist"
    for i in range(len(dataset)):
        assert_sample_contract(dataset, dataset[i])


def test_missing_mnist_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEDET_MNIST_ROOT", str(tmp_path))
    assert not mnist_available()
    assert build_dataset("digits-loc").glyphs == "builtin"
    with pytest.raises(DataError, match="MNIST"):
        build_dataset("digits-loc:glyphs=mnist")


def test_truncated_idx_file_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 10)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        read_idx(path)
