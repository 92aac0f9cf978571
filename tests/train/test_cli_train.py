"""``edgedet train`` and ``edgedet val`` as a user meets them: outputs, JSON keys, one-line errors."""

import json

import pytest

from tests.conftest import assert_user_error, run_cli
from tests.conftest import cli_in_process as cli

LOC = "digits-loc:n=32,glyphs=builtin"
SMALL_LOC = ["--cfg", "widths=[8,16]", "--cfg", "hidden=32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real run through a separate process, shared by the tests below."""
    out = tmp_path_factory.mktemp("train") / "loc"
    result = run_cli("train", "--model", "localizer", "--data", LOC, "--epochs", "1", "--batch", "16",
                     "--workers", "0", "--out", str(out), *SMALL_LOC)
    assert result.returncode == 0, result.stderr
    return out, result


def test_train_writes_outputs_and_reports(trained):
    out, result = trained
    for name in ("best.pt", "last.pt", "results.csv", "results.png"):
        assert (out / name).is_file(), name
    assert "epoch 1/1" in result.stderr and "accuracy" in result.stderr
    assert str(out / "best.pt") in result.stdout


def test_val_json_keys_per_family(trained, tmp_path, capsys):
    out, _ = trained
    path = tmp_path / "val.json"
    result = cli(capsys, "val", "--weights", str(out / "best.pt"), "--json", str(path))
    assert result.returncode == 0, result.stderr
    doc = json.loads(path.read_text())
    assert {"accuracy", "mean_iou", "map50", "map50_95"} <= set(doc)
    assert doc["model"] == "localizer" and doc["data"] == LOC and doc["split"] == "val" and doc["images"] == 32
    assert 0 <= doc["accuracy"] <= 1 and set(doc["per_class"]) == {str(i) for i in range(10)}
    assert "accuracy" in result.stdout


def test_val_segmenter_and_detector_keys(tmp_path, capsys):
    from edgedet.models import create_model
    from edgedet.train.checkpoint import save_checkpoint

    data = "clutter:n=4,glyphs=builtin,size=64"
    save_checkpoint(tmp_path / "unet.pt", create_model("unet", base_width=4, depth=2, input_size=(64, 64)))
    result = cli(capsys, "val", "--weights", str(tmp_path / "unet.pt"), "--data", data, "--json", str(tmp_path / "u.json"))
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "u.json").read_text())
    assert {"mean_iou", "pixel_accuracy", "segmentation", "confusion"} <= set(doc)
    assert doc["segmentation"]["class_names"][0] == "background" and "weighted" in result.stdout
    save_checkpoint(tmp_path / "yolo.pt", create_model("yolov3-tiny", num_classes=10, width=0.25, input_size=(64, 64)))
    result = cli(capsys, "val", "--weights", str(tmp_path / "yolo.pt"), "--data", data, "--json", str(tmp_path / "y.json"))
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "y.json").read_text())
    assert {"map50", "map50_95", "per_class"} <= set(doc) and "accuracy" not in doc


def test_train_user_errors(tmp_path, capsys, trained):
    out = str(tmp_path / "x")
    assert_user_error(cli(capsys, "train", "--model", "yolov9", "--data", LOC, "--out", out), "unknown model", "localizer")
    assert_user_error(cli(capsys, "train", "--model", "localizer", "--data", "digits-lok", "--out", out),
                      "unknown dataset")
    assert_user_error(cli(capsys, "train", "--model", "localizer", "--data", "digits-loc:n=x", "--out", out), "'n'")
    assert_user_error(cli(capsys, "train", "--model", "unet", "--data", LOC, "--out", out), "no masks")
    assert_user_error(cli(capsys, "train", "--model", "localizer", "--data", "clutter:n=4", "--out", out),
                      "one object per image")
    usage = cli(capsys, "train", "--model", "localizer", "--out", out)  # a usage error: exit 2, before torch
    assert usage.returncode == 2 and "--model and --data" in usage.stderr and "Traceback" not in usage.stderr
    assert_user_error(cli(capsys, "train", "--resume", "--out", out), "does not exist")
    assert_user_error(cli(capsys, "train", "--model", "localizer", "--data", LOC, "--out", out, "--device", "tpu"),
                      "unknown --device")
    assert_user_error(cli(capsys, "train", "--model", "localizer", "--data", LOC, "--out", out, "--cfg", "colour=1"),
                      "no option colour")
    assert_user_error(cli(capsys, "train", "--model", "localizer", "--data", LOC, "--out", out,
                          "--weights", str(tmp_path / "missing.pt")), "does not exist")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").glob("*.pt"))
    # an existing run is never overwritten by accident
    assert_user_error(cli(capsys, "train", "--model", "localizer", "--data", LOC, "--out", str(trained[0])),
                      "already holds a run", "--resume")
    # finished run: --resume needs more epochs
    assert_user_error(cli(capsys, "train", "--resume", "--out", str(trained[0])), "already finished")
    usage = cli(capsys, "train", "--model", "localizer", "--data", LOC, "--epochs", "0")
    assert usage.returncode == 2


def test_val_user_errors(tmp_path, capsys, trained):
    best = str(trained[0] / "best.pt")
    assert_user_error(cli(capsys, "val", "--weights", str(tmp_path / "nope.pt")), "does not exist")
    assert_user_error(cli(capsys, "val", "--weights", best, "--data", "digits-grid:n=4"), "one object per image")
    assert_user_error(cli(capsys, "val", "--weights", best, "--data", "clutter-x"), "unknown dataset")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert_user_error(cli(capsys, "val", "--weights", str(tmp_path / "junk.pt")), "not a readable checkpoint")
