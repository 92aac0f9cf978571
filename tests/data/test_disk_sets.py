"""Penn-Fudan, YOLO and COCO layouts built in tmp_path: reading, splits and every bad-data error."""

import json
import warnings

import cv2
import numpy as np
import pytest

from edgedet.data import CocoDataset, PennFudan, YoloDataset, build_dataset
from edgedet.data.disk import DataWarning, read_instance_ids, split_every
from edgedet.errors import DataError
from tests.conftest import assert_sample_contract
from tests.runtime.conftest import write_oversized_png

H, W = 40, 50


def write_image(path, seed: int = 0, size=(H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)


# ---------------------------------------------------------------- Penn-Fudan

def make_pennfudan(root, count: int = 4):
    """``count`` images; image k holds two people: rows 5..14 x cols 3..9 and rows 20..34 x cols 30..44."""
    for k in range(count):
        write_image(root / "PNGImages" / f"FudanPed{k:05d}.png", seed=k)
        ids = np.zeros((H, W), np.uint8)
        ids[5:15, 3:10] = 1
        ids[20:35, 30:45] = 2
        (root / "PedMasks").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / "PedMasks" / f"FudanPed{k:05d}_mask.png"), ids)
    return root


def test_pennfudan_reads_instances_boxes_and_semantic(tmp_path):
    root = make_pennfudan(tmp_path / "PennFudanPed")
    dataset = build_dataset(f"pennfudan:{root}")
    assert dataset.class_names == ("person",) and dataset.has_masks and dataset.task == "segmentation"
    sample = dataset[0]
    assert_sample_contract(dataset, sample)
    assert sample["id"] == "FudanPed00000"
    np.testing.assert_array_equal(sample["boxes"], [[3, 5, 10, 15], [30, 20, 45, 35]])
    np.testing.assert_array_equal(sample["labels"], [0, 0])
    assert sample["image"].shape == (H, W, 3)
    np.testing.assert_array_equal(sample["image"], cv2.imread(str(root / "PNGImages" / "FudanPed00000.png")))
    assert set(np.unique(sample["semantic"]).tolist()) == {0, 1}


def test_pennfudan_split_every_nth_file(tmp_path):
    root = make_pennfudan(tmp_path, count=6)
    train = build_dataset(f"pennfudan:{root},val_every=3", "train")
    val = build_dataset(f"pennfudan:{root},val_every=3", "val")
    assert [s["id"] for s in val] == ["FudanPed00002", "FudanPed00005"]
    assert len(train) == 4 and not {s["id"] for s in train} & {s["id"] for s in val}
    assert len(build_dataset(f"pennfudan:{root}", "val")) == 0  # 6 files, default every 10th


def test_pennfudan_image_without_mask(tmp_path):
    root = make_pennfudan(tmp_path)
    (root / "PedMasks" / "FudanPed00002_mask.png").unlink()
    with pytest.raises(DataError, match="FudanPed00002.png has no mask"):
        PennFudan(root)


def test_pennfudan_corrupt_image_names_the_file(tmp_path):
    root = make_pennfudan(tmp_path)
    (root / "PNGImages" / "FudanPed00001.png").write_bytes(b"\x89PNG not really")
    dataset = PennFudan(root)
    assert_sample_contract(dataset, dataset[0])
    with pytest.raises(DataError, match="FudanPed00001.png"):
        dataset[1]


def test_pennfudan_mask_of_wrong_size(tmp_path):
    root = make_pennfudan(tmp_path)
    cv2.imwrite(str(root / "PedMasks" / "FudanPed00000_mask.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match="FudanPed00000_mask.png"):
        PennFudan(root)[0]


def test_pennfudan_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        build_dataset(f"pennfudan:{tmp_path / 'nowhere'}")
    (tmp_path / "PNGImages").mkdir()
    with pytest.raises(DataError, match="PedMasks"):
        PennFudan(tmp_path)


def test_colour_instance_masks_map_to_ids(tmp_path):
    # OpenCV expands palette PNGs to colours; each colour must still be one instance.
    mask = np.zeros((H, W, 3), np.uint8)
    mask[2:6, 2:6] = (0, 0, 255)
    mask[10:20, 10:20] = (0, 255, 255)
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    ids = read_instance_ids(tmp_path / "m.png")
    assert ids.shape == (H, W) and ids[0, 0] == 0
    assert len(np.unique(ids)) == 3 and ids[3, 3] != ids[15, 15]


def test_split_every():
    items = list(range(10))
    assert split_every(items, "val", 10) == [9]
    assert split_every(items, "train", 10) == list(range(9))
    assert split_every(items, "val", 0) == split_every(items, "train", 0) == items
    with pytest.raises(DataError):
        split_every(items, "val", -1)


# ---------------------------------------------------------------- YOLO

def make_yolo(root, label_text: str = "0 0.5 0.5 0.4 0.5\n1 0.1 0.1 0.2 0.2\n"):
    write_image(root / "images" / "a.png", 1)
    write_image(root / "images" / "sub" / "b.jpg", 2)
    write_image(root / "images" / "c.png", 3)
    (root / "labels" / "sub").mkdir(parents=True)
    (root / "labels" / "a.txt").write_text(label_text)
    (root / "labels" / "sub" / "b.txt").write_text("1 0.5 0.5 1.0 1.0\n")
    (root / "classes.txt").write_text("cat\ndog\n")
    return root


def test_yolo_reads_normalised_boxes(tmp_path):
    root = make_yolo(tmp_path)
    dataset = build_dataset(f"yolo:{root},val_every=0")
    assert dataset.class_names == ("cat", "dog") and dataset.task == "detection"
    assert not dataset.has_masks
    by_id = {s["id"]: s for s in dataset}
    assert set(by_id) == {"a", "b", "c"}
    for sample in by_id.values():
        assert_sample_contract(dataset, sample)
    np.testing.assert_allclose(by_id["a"]["boxes"], [[15, 10, 35, 30], [0, 0, 10, 8]], atol=1e-5)
    np.testing.assert_array_equal(by_id["a"]["labels"], [0, 1])
    np.testing.assert_allclose(by_id["b"]["boxes"], [[0, 0, W, H]])
    assert len(by_id["c"]["boxes"]) == 0  # no label file: no objects


def test_yolo_polygon_lines_give_their_bounding_box(tmp_path):
    root = make_yolo(tmp_path, label_text="1 0.2 0.25 0.6 0.25 0.4 0.75\n")
    sample = YoloDataset(root, val_every=0)[0]
    np.testing.assert_allclose(sample["boxes"], [[10, 10, 30, 30]], atol=1e-5)


def test_yolo_train_val_folders(tmp_path):
    for split, names in (("train", ["x", "y"]), ("val", ["z"])):
        for name in names:
            write_image(tmp_path / "images" / split / f"{name}.png")
            (tmp_path / "labels" / split).mkdir(parents=True, exist_ok=True)
            (tmp_path / "labels" / split / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nnames:\n  0: plate\nnc: 1\n")
    train, val = YoloDataset(tmp_path, "train"), YoloDataset(tmp_path, "val")
    assert train.class_names == ("plate",)
    assert [s["id"] for s in train] == ["x", "y"] and [s["id"] for s in val] == ["z"]
    assert len(val[0]["boxes"]) == 1


@pytest.mark.parametrize("yaml_text, names", [
    ("names: ['a', 'b c']\n", ("a", "b c")),
    ("names: [a, b]\n", ("a", "b")),
    ("nc: 2\nnames:\n  - car\n  - bus  # big\ntrain: x\n", ("car", "bus")),
    ("names:\n  0: car\n  1: 'bus'\n", ("car", "bus")),
    ("names: {0: car, 1: bus}\n", ("car", "bus")),
])
def test_yolo_class_names_from_data_yaml(tmp_path, yaml_text, names):
    make_yolo(tmp_path)
    (tmp_path / "classes.txt").unlink()
    (tmp_path / "data.yaml").write_text(yaml_text)
    assert YoloDataset(tmp_path).class_names == names


def test_yolo_label_out_of_range(tmp_path):
    # Label files are all read when the set is built: a bad line fails before training starts.
    root = make_yolo(tmp_path, label_text="2 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"a\.txt line 1: class 2 outside 0\.\.1"):
        YoloDataset(root, val_every=0)


def test_yolo_box_outside_image(tmp_path):
    root = make_yolo(tmp_path, label_text="0 0.95 0.5 0.5 0.2\n")
    with pytest.raises(DataError, match=r"a\.txt: box .* outside the 50x40 image"):
        YoloDataset(root, val_every=0)[0]


def test_yolo_box_within_one_pixel_is_clipped(tmp_path):
    root = make_yolo(tmp_path, label_text="0 0.51 0.5 1.0 1.0\n")  # 0.5 px past the right edge
    with pytest.warns(DataWarning, match="1 box reaches past the image edge"):
        dataset = YoloDataset(root, val_every=0)
    np.testing.assert_allclose(dataset[0]["boxes"], [[0.5, 0, W, H]], atol=1e-4)


def test_yolo_boxes_slightly_past_the_edge_are_clipped_with_one_warning(tmp_path):
    # Up to 5 % of the side past the edge is clipped (as public sets need), counted over the
    # whole set in one warning; further out stays an error (test_yolo_box_outside_image).
    root = make_yolo(tmp_path, label_text="0 0.51 0.5 1.04 0.5\n1 0.5 0.02 0.2 0.1\n0 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "c.txt").write_text("1 0.02 0.5 0.08 0.2\n")  # 0.02 past the left edge
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = YoloDataset(root, val_every=0)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 1 and "3 boxes reach past the image edge" in messages[0]
    by_id = {s["id"]: s for s in dataset}
    np.testing.assert_allclose(by_id["a"]["boxes"], [[0, 10, W, 30], [20, 0, 30, 2.8], [20, 16, 30, 24]],
                               atol=1e-4)
    np.testing.assert_allclose(by_id["c"]["boxes"], [[0, 16, 3, 24]], atol=1e-4)
    for sample in by_id.values():
        assert_sample_contract(dataset, sample)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # a clean set warns about nothing
        YoloDataset(make_yolo(tmp_path / "clean"), val_every=0)


@pytest.mark.parametrize("data, where", [
    (b"0 0.5 0.5 0.2 0.2\n\x93\xfa\x00\xc3garbage\n", r"a\.txt line 2: not UTF-8 text; save it as UTF-8"),
    ("0 0.5 0.5 0.2 0.2\n".encode("utf-16"), r"a\.txt line 1: not UTF-8 text \(it looks like UTF-16\)"),
])
def test_yolo_labels_that_are_not_utf8(tmp_path, data, where):
    root = make_yolo(tmp_path)
    (root / "labels" / "a.txt").write_bytes(data)
    with pytest.raises(DataError, match=where):
        YoloDataset(root, val_every=0)


def test_yolo_labels_and_class_names_with_a_bom(tmp_path):
    root = make_yolo(tmp_path)
    (root / "labels" / "a.txt").write_bytes(b"\xef\xbb\xbf0 0.5 0.5 0.4 0.5\n")
    (root / "classes.txt").write_bytes(b"\xef\xbb\xbfcat\ndog\n")
    dataset = YoloDataset(root, val_every=0)
    assert dataset.class_names == ("cat", "dog")
    np.testing.assert_allclose(dataset[0]["boxes"], [[15, 10, 35, 30]], atol=1e-5)


def test_yolo_without_labels_folder(tmp_path):
    root = make_yolo(tmp_path)
    for path in sorted((root / "labels").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / "labels").rmdir()
    with pytest.raises(DataError, match=r"no labels/ folder beside images/ in .*"):
        build_dataset(f"yolo:{root}")


def test_yolo_non_finite_label(tmp_path):
    root = make_yolo(tmp_path, label_text="0 nan 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"a\.txt line 1: a number that is not finite"):
        YoloDataset(root, val_every=0)


def test_yolo_image_whose_header_declares_too_many_pixels(tmp_path):
    # 60000x60000 in the header: OpenCV refuses to decode it; a DataError naming the file, no cv2.error.
    root = make_yolo(tmp_path)
    write_oversized_png(root / "images" / "c.png")
    dataset = YoloDataset(root, val_every=0)
    with pytest.raises(DataError, match=r"cannot read image .*c\.png: corrupt or unsupported format"):
        dataset[[p.name for p in dataset.files].index("c.png")]


@pytest.mark.parametrize("line", ["0 0.5 0.5 0.2\n", "zero 0.5 0.5 0.2 0.2\n", "0 0.5 0.5 -0.2 0.2\n"])
def test_yolo_malformed_label_line(tmp_path, line):
    root = make_yolo(tmp_path, label_text=line)
    with pytest.raises(DataError, match=r"a\.txt line 1"):
        YoloDataset(root, val_every=0)


def test_yolo_corrupt_image_and_missing_parts(tmp_path):
    root = make_yolo(tmp_path)
    (root / "images" / "c.png").write_bytes(b"garbage")
    dataset = YoloDataset(root, val_every=0)
    with pytest.raises(DataError, match="c.png"):
        dataset[[p.name for p in dataset.files].index("c.png")]
    (root / "classes.txt").unlink()
    with pytest.raises(DataError, match="classes.txt"):
        YoloDataset(root)
    with pytest.raises(DataError, match="images"):
        YoloDataset(tmp_path / "labels")


# ---------------------------------------------------------------- COCO

def make_coco(root, annotations=None, categories=None, images_dir=None):
    images_dir = images_dir or root
    write_image(images_dir / "img1.png", 1)
    write_image(images_dir / "img2.png", 2)
    data = {
        "images": [{"id": 10, "file_name": "img1.png", "height": H, "width": W},
                   {"id": 11, "file_name": "img2.png", "height": H, "width": W}],
        "categories": categories or [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [5, 6, 10, 12], "iscrowd": 0,
             "segmentation": [[5, 6, 14, 6, 14, 17, 5, 17]]},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [20, 10, 20, 20], "iscrowd": 0,
             "segmentation": [[20, 10, 39, 10, 39, 29, 20, 29]]},
            {"id": 3, "image_id": 10, "category_id": 3, "bbox": [0, 30, 4, 4], "iscrowd": 1,
             "segmentation": [[0, 30, 3, 30, 3, 33, 0, 33]]},
            {"id": 4, "image_id": 11, "category_id": 3, "bbox": [1, 1, 0, 5], "iscrowd": 0},
        ],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_boxes_and_contiguous_labels(tmp_path):
    path = make_coco(tmp_path)
    dataset = build_dataset(f"coco:{path},val_every=0")
    assert dataset.class_names == ("cat", "dog")  # sorted by category id: 3, 7
    assert dataset.image_size == (H, W) and not dataset.has_masks
    first, second = dataset[0], dataset[1]
    for sample in (first, second):
        assert_sample_contract(dataset, sample)
    assert first["id"] == "img1"
    np.testing.assert_array_equal(first["boxes"], [[5, 6, 15, 18], [20, 10, 40, 30]])
    np.testing.assert_array_equal(first["labels"], [1, 0])
    assert len(second["boxes"]) == 0  # the zero-width box is dropped


def test_coco_polygon_masks(tmp_path):
    path = make_coco(tmp_path)
    dataset = build_dataset(f"coco:{path},val_every=0,masks=true")
    assert dataset.has_masks and dataset.task == "segmentation"
    sample = dataset[0]
    assert_sample_contract(dataset, sample)
    np.testing.assert_array_equal(sample["boxes"], [[5, 6, 15, 18], [20, 10, 40, 30]])
    assert (sample["semantic"][30:34, 0:4] == 255).all()  # the crowd region is ignored
    assert sample["semantic"][20, 30] == 1 and sample["semantic"][10, 10] == 2


def test_coco_images_option_and_split(tmp_path):
    path = make_coco(tmp_path, images_dir=tmp_path / "pictures")
    with pytest.raises(DataError, match="img1.png not found"):
        CocoDataset(path)
    train = build_dataset(f"coco:{path},images={tmp_path / 'pictures'},val_every=2", "train")
    val = build_dataset(f"coco:{path},images={tmp_path / 'pictures'},val_every=2", "val")
    assert [s["id"] for s in train] == ["img1"] and [s["id"] for s in val] == ["img2"]


def test_coco_unknown_category(tmp_path):
    bad = {"id": 9, "image_id": 10, "category_id": 99, "bbox": [0, 0, 2, 2]}
    path = make_coco(tmp_path, annotations=[bad])
    with pytest.raises(DataError, match="instances.json.*category id 99"):
        CocoDataset(path)


def test_coco_box_outside_image(tmp_path):
    bad = {"id": 9, "image_id": 10, "category_id": 3, "bbox": [40, 0, 20, 5]}
    path = make_coco(tmp_path, annotations=[bad])
    with pytest.raises(DataError, match=r"instances.json \(image img1.png\): box .* outside"):
        CocoDataset(path, val_every=0)[0]


def test_coco_boxes_slightly_past_the_edge_are_clipped_with_one_warning(tmp_path):
    slightly = [{"id": 9, "image_id": 10, "category_id": 3, "bbox": [40, 0, 12, 5]},  # 2 px past x = 50
                {"id": 8, "image_id": 11, "category_id": 7, "bbox": [-1.5, 3, 10, 5]}]
    path = make_coco(tmp_path, annotations=slightly)
    with pytest.warns(DataWarning, match="instances.json: 2 boxes reach past the image edge"):
        dataset = CocoDataset(path, val_every=0)
    np.testing.assert_allclose(dataset[0]["boxes"], [[40, 0, W, 5]])
    np.testing.assert_allclose(dataset[1]["boxes"], [[0, 3, 8.5, 8]])


def test_coco_size_mismatch_and_bad_json(tmp_path):
    path = make_coco(tmp_path)
    write_image(tmp_path / "img1.png", size=(20, 20))
    with pytest.raises(DataError, match="img1.png is 20x20"):
        CocoDataset(path, val_every=0)[0]
    path.write_text("{not json")
    with pytest.raises(DataError, match="instances.json"):
        CocoDataset(path)
    with pytest.raises(DataError, match="not found"):
        CocoDataset(tmp_path / "missing.json")
