"""Spec strings: parsing, typed options, and the errors a mistyped spec gives."""

import pytest

from edgedet.data import DatasetSpec, build_dataset, list_datasets, parse_spec
from edgedet.errors import DataError


def test_known_datasets():
    assert list_datasets() == ["digits-loc", "digits-grid", "clutter", "digits-scene", "pennfudan", "yolo", "coco"]


def test_parse_synthetic_options_are_typed():
    spec = parse_spec("clutter:n=12,seed=3,size=64x96,max_digits=2,glyphs=builtin")
    assert spec == DatasetSpec("clutter", None, {"n": 12, "seed": 3, "size": (64, 96), "max_digits": 2,
                                                 "glyphs": "builtin"})
    assert parse_spec("digits-loc").options == {}
    assert parse_spec(" Digits_Loc:empty=0.5 ").options == {"empty": 0.5}
    assert parse_spec("coco:a.json,masks=yes").options == {"masks": True}


def test_parse_paths(tmp_path):
    assert parse_spec("yolo:data/plates").path.as_posix() == "data/plates"
    spec = parse_spec("coco:ann/x.json,images=pics,val_every=5")
    assert spec.path.as_posix() == "ann/x.json" and spec.options == {"images": "pics", "val_every": 5}
    odd = tmp_path / "a,b=c"
    odd.mkdir()
    assert parse_spec(f"pennfudan:{odd}").path == odd  # an existing path wins over option syntax
    assert not str(parse_spec("yolo:~/sets/x").path).startswith("~")


def test_build_with_options():
    dataset = build_dataset("digits-grid:n=7,seed=2,glyphs=builtin,fill=1.0", "val")
    assert len(dataset) == 7 and dataset.split == "val" and dataset.seed == 2
    assert all(len(dataset[i]["labels"]) >= 5 for i in range(7))


@pytest.mark.parametrize("spec, message", [
    ("mnist-soup", "unknown dataset 'mnist-soup'; known datasets: digits-loc, digits-grid, clutter"),
    ("", "empty dataset spec"),
    ("digits-loc:bogus=1", "unknown option 'bogus' for dataset 'digits-loc'; valid options: n, seed"),
    ("digits-loc:n=ten", "bad value for option 'n'"),
    ("digits-loc:n", "expected key=value"),
    ("digits-loc:n=1,n=2", "given twice"),
    ("clutter:size=1x2x3", "bad value for option 'size'"),
    ("coco:x.json,masks=maybe", "bad value for option 'masks'"),
    ("yolo", "needs a path"),
    ("yolo:val_every=3", "needs a path"),
    ("digits-loc:glyphs=crayon", "unknown glyph source"),
])
def test_bad_specs(spec, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_dataset(spec)


def test_bad_split():
    with pytest.raises(DataError, match="unknown split 'test'"):
        build_dataset("digits-loc", "test")


def test_missing_disk_folder_names_it(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        build_dataset(f"yolo:{tmp_path / 'nowhere'}")


def test_describe_datasets_covers_every_kind():
    from edgedet.data import describe_datasets

    described = describe_datasets()
    assert len(described) == len(list_datasets())
    assert "pennfudan:PATH" in described and "val_every" in described["pennfudan:PATH"]
