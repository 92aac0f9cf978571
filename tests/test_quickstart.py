"""The main job: ``edgedet quickstart`` runs end to end and leaves every file its report links to.

CI runs the README's main command first and passes its output folder in
``EDGEDET_QUICKSTART_OUT``, so the suite checks that run instead of repeating it; without the
variable the test runs ``edgedet quickstart`` itself.
"""

import json
import os
import re
from pathlib import Path

import cv2
import pytest

from tests.conftest import assert_user_error, run_cli

pytestmark = pytest.mark.timeout(900)  # the first test waits for the whole main job

from edgedet import samples
from edgedet.models import get_entry, list_models

FAMILIES = tuple(samples.shipped_models())  # the quickstart includes every shipped checkpoint
ON_VIDEO = tuple(name for name in FAMILIES if get_entry(name).spec.dataset == "clutter")


@pytest.fixture(scope="module")
def quickstart_out(tmp_path_factory) -> Path:
    given = os.environ.get("EDGEDET_QUICKSTART_OUT")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    result = run_cli("quickstart", "--out", str(out), timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "report:" in result.stdout
    return out


@pytest.mark.slow
def test_report_links_only_files_that_exist(quickstart_out):
    report = (quickstart_out / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert len(links) >= 14
    for link in links:
        assert (quickstart_out / link).is_file(), link
    for family in FAMILIES:
        assert f"## {family}" in report
        assert f"| checkpoint | `edgedet/samples/checkpoints/{family}.pt` |" in report
        assert (quickstart_out / "graphs" / f"{family}.onnx").is_file()
        assert (quickstart_out / "graphs" / f"{family}.torchscript").is_file()
        assert (quickstart_out / "plots" / f"{family}.png").is_file()


@pytest.mark.slow
def test_every_graph_passed_parity_on_the_cpu_backends(quickstart_out):
    report = (quickstart_out / "report.md").read_text()
    assert "FAIL" not in report
    assert report.count("| parity, onnxruntime-cpu | PASS |") == len(FAMILIES)
    assert report.count("| parity, torchscript-cpu | PASS |") == len(FAMILIES)


@pytest.mark.slow
def test_the_runtime_processed_every_frame_of_the_video(quickstart_out):
    source = cv2.VideoCapture(str(quickstart_out / "clutter.mp4"))
    frames = int(source.get(cv2.CAP_PROP_FRAME_COUNT))
    source.release()
    assert frames > 0
    assert "yolov3-tiny" in ON_VIDEO and "unet" in ON_VIDEO
    for family in ON_VIDEO:
        video = cv2.VideoCapture(str(quickstart_out / f"clutter-{family}.mp4"))
        assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
        video.release()
        lines = (quickstart_out / f"clutter-{family}.jsonl").read_text().splitlines()
        assert len(lines) == frames
    detections = [json.loads(line)["detections"] for line in
                  (quickstart_out / "clutter-yolov3-tiny.jsonl").read_text().splitlines()]
    assert sum(map(len, detections)) > frames  # the shipped detector finds the digits


def test_every_family_ships_a_checkpoint_and_samples_fit_the_size_budget():
    registered = set(list_models())
    assert set(FAMILIES) <= registered
    assert {get_entry(name).family for name in registered} == {get_entry(name).family for name in FAMILIES}
    total = sum(p.stat().st_size for p in samples.root().rglob("*") if p.is_file())
    assert total <= 25e6


def test_bad_device_is_one_error_line(tmp_path):
    assert_user_error(run_cli("quickstart", "--out", str(tmp_path), "--device", "tpu"), "--device")


def test_out_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "report"
    target.write_text("not a folder")
    result = run_cli("quickstart", "--out", str(target))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is a file" in result.stderr


def test_missing_shipped_checkpoint_is_one_clear_error(tmp_path):
    from edgedet.quickstart import QuickstartError, quickstart

    with pytest.raises(QuickstartError, match="no checkpoints of registered models in .*no-samples"):
        quickstart(tmp_path / "out", samples=tmp_path / "no-samples", say=lambda m: None)
