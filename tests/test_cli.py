"""The command line as a user meets it: help, version, models, and error handling."""

from edgedet import __version__
from edgedet.models import list_models
from tests.conftest import assert_user_error, run_cli


def test_help_and_version_both_entry_points():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("models", "data"):
        assert command in result.stdout
    version = run_cli("--version")
    assert version.returncode == 0 and __version__ in version.stdout


def test_models_lists_every_registered_model_with_size_and_gflops():
    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["model", "family", "task", "input", "CxHxW", "classes", "params", "GFLOPs"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == list_models()
    assert rows["yolov3"][3] == "3x416x416" and rows["yolov3"][4] == "80"
    assert rows["yolov3"][5].endswith("M") and float(rows["yolov3"][6]) > 60
    assert rows["localizer"][3] == "1x48x60"


def test_unknown_command_and_option_are_usage_errors():
    result = run_cli("frobnicate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = run_cli("models", "--bogus")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_data_preview_writes_a_png(tmp_path):
    out = tmp_path / "preview.png"
    result = run_cli("data", "preview", "--data", "digits-grid:glyphs=builtin", "--out", str(out), "-n", "4")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_preview_bad_input_is_one_error_line(tmp_path):
    assert_user_error(run_cli("data", "preview", "--data", "mnist-please", "--out", str(tmp_path / "a.png")),
                      "unknown dataset", "clutter")
    assert_user_error(run_cli("data", "preview", "--data", "pennfudan:/nonexistent/dir",
                              "--out", str(tmp_path / "a.png")), "/nonexistent/dir")
    assert_user_error(run_cli("data", "preview", "--data", "clutter:size=banana", "--out", str(tmp_path / "a.png")),
                      "size")
    assert_user_error(run_cli("data", "preview", "--data", "clutter", "--out", str(tmp_path / "a.gif")), ".png")
    assert not any(tmp_path.iterdir())


def test_edgedet_warnings_are_one_warning_line(tmp_path):
    import cv2
    import numpy as np

    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images" / "a.png"), np.full((40, 40, 3), 90, np.uint8))
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 1.02 0.5\n")  # 1 % past both sides: clipped
    (root / "classes.txt").write_text("thing\n")
    result = run_cli("data", "preview", "--data", f"yolo:{root}", "--out", str(tmp_path / "p.png"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "clipped" in lines[0], result.stderr
