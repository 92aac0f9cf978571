"""benchmarks/vs_ultralytics.py: its pure helpers (arguments, the helper's result line, ratios and tables).

Nothing here needs Ultralytics, its venv or the network; the measurement itself is the script's run.
"""

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_ultralytics.py"


@pytest.fixture(scope="module")
def vs():
    spec = importlib.util.spec_from_file_location("vs_ultralytics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["vs_ultralytics"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("vs_ultralytics", None)


def test_defaults_and_quick(vs):
    args = vs.parse_args([])
    assert (args.rounds, args.frames, args.quick) == (3, vs.DEFAULT_FRAMES, False)
    assert args.venv.name == "edgedet-vs-ultralytics-venv"
    quick = vs.parse_args(["--quick"])
    assert (quick.rounds, quick.frames) == (1, vs.QUICK_FRAMES)
    assert vs.parse_args(["--quick", "--frames", "20"]).frames == 20  # --quick never lengthens a run


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--frames", "-5"], ["--frames", "many"], ["--bogus"]])
def test_bad_arguments_exit_2_with_an_error_line(vs, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        vs.parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bad_argument_from_the_command_line():
    done = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "zero"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "error:" in done.stderr and "Traceback" not in done.stderr


def test_parse_result_takes_the_last_result_line(vs):
    out = 'Ultralytics says hello\nRESULT {"fps": 1.0}\nnoise\nRESULT {"fps": 2.5, "saved": ["clip.avi"]}\n'
    assert vs.parse_result(out) == {"fps": 2.5, "saved": ["clip.avi"]}
    with pytest.raises(ValueError, match="no RESULT"):
        vs.parse_result("only logs\n")


def test_venv_python_is_inside_the_venv(vs, tmp_path):
    python = vs.venv_python(tmp_path / "venv")
    assert python.parent.parent == tmp_path / "venv" and python.name.startswith("python")


def test_ratio_is_edgedet_speed_over_ultralytics(vs):
    fast = vs.Row("edgedet", "FPS", [30.0, 32.0, 31.0])
    slow = vs.Row("ultralytics", "FPS", [10.0, 12.0, 11.0])
    assert vs.ratio(fast, slow) == pytest.approx(31 / 11)
    # latency: fewer milliseconds is faster, so the ratio is inverted
    assert vs.ratio(vs.Row("a", "ms", [20.0], higher=False), vs.Row("b", "ms", [30.0], higher=False)) == 1.5
    assert math.isnan(vs.ratio(fast, vs.Row("missing", "FPS")))


def test_verdict(vs):
    assert vs.verdict(1.6, 1.5) == "met"
    assert vs.verdict(1.2, 1.5) == "**missed**"
    assert vs.verdict(float("nan"), 1.5) == "not measured"
    assert vs.verdict(3.0, None) == ""


def test_tables_show_every_round_and_the_median(vs):
    rows = [vs.Row("edgedet run", "FPS", [30.04, 28.0, 31.5]), vs.Row("graph p50", "ms", [12.345], higher=False),
            vs.Row("openvino", "FPS")]
    lines = vs.format_rows(rows)
    assert lines[2] == "| edgedet run | FPS | 30.0 | 30.0, 28.0, 31.5 |"
    assert lines[3] == "| graph p50 | ms | 12.35 | 12.35 |"
    assert lines[4] == "| openvino | FPS | - | not measured |"
    ours, theirs = vs.Row("e", "FPS", [30.0]), vs.Row("u", "FPS", [15.0])
    table = vs.format_ratios([("saving", ours, theirs, 1.5), ("no goal", ours, vs.Row("u", "FPS"), None)])
    assert table[2] == "| saving | 30.0 | 15.0 | 2.00x | >= 1.5x: met |"
    assert table[3].startswith("| no goal | 30.0 |") and "| - |" in table[3]


def test_findings_say_when_a_goal_is_missed(vs):
    def rows(ours: float, theirs: float, ov: float) -> dict:
        R = {key: vs.Row(name, unit, higher=unit == "FPS") for key, (name, unit) in vs.ROWS.items()}
        for key in ("save", "run"):
            R[f"{key} ours"].values.append(ours)
            R[f"{key} theirs"].values.append(theirs)
            R[f"{key} theirs ov"].values.append(ov)
        R["p50 raw"].values.append(10.0)
        R["p50 theirs"].values.append(14.0)
        R["bare ours"].values.append(35.0)
        return R

    text = " ".join(vs.findings(rows(30, 25, 35), [0.1, 0.2], 2, (15.0, 0.0), (5.6, 8.0)))
    assert "1.5x goal is missed" in text and "**behind**" in text and "busy" not in text
    text = " ".join(vs.findings(rows(40, 20, 30), [3.5, 4.0], 2, (15.0, 0.0), (5.6, 8.0)))
    assert "1.5x goal is met" in text and "ahead" in text and "busy" in text
    assert "outran its own graph's bare" in text and "outran" not in " ".join(
        vs.findings(rows(30, 25, 35), [0.1], 2, (15.0, 0.0), (5.6, 8.0)))
