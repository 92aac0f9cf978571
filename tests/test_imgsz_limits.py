"""``--imgsz`` past the documented limit (each side at most ``MAX_IMGSZ``) is one ``error:`` line
before anything is built or written, for export and training alike."""

import pytest

from edgedet.export.options import MAX_IMGSZ, ExportError, ExportOptions, imgsz_problem
from edgedet.train.options import TrainingError, TrainOptions
from tests.conftest import assert_user_error, run_cli


@pytest.mark.parametrize("imgsz, ok", [(None, True), ((MAX_IMGSZ, MAX_IMGSZ), True), ((320, MAX_IMGSZ + 1), False),
                                       ((100000, 100000), False), ((0, 32), False)])
def test_imgsz_limit(imgsz, ok):
    assert (imgsz_problem(imgsz) is None) == ok
    if not ok:
        with pytest.raises(ExportError, match="--imgsz"):
            ExportOptions(imgsz=imgsz).validate("yolov3-tiny")
        with pytest.raises(TrainingError, match="--imgsz"):
            TrainOptions(model="yolov3-tiny", data="digits-grid", imgsz=imgsz).check()


def test_export_with_a_huge_imgsz_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = run_cli("export", "--model", "yolov3-tiny", "--random-init", "--imgsz", "100000", "--out", str(out),
                     "--name", "big")
    assert_user_error(result, "--imgsz 100000,100000 is too large", f"at most {MAX_IMGSZ}")
    assert not (out / "big.pt").exists() and not (out / "big.onnx").exists()


def test_train_with_a_huge_imgsz_writes_nothing(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--model", "yolov3-tiny", "--data", "digits-grid", "--imgsz", "9000,320",
                     "--epochs", "1", "--out", str(out))
    assert_user_error(result, "--imgsz 9000,320 is too large")
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()


def test_bench_with_a_huge_imgsz_is_one_error_line():
    assert_user_error(run_cli("bench", "--model", "grid", "--backends", "eager", "--imgsz", "100000"),
                      "--imgsz 100000,100000 is too large")
