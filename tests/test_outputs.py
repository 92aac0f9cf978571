"""Output locations that cannot be written fail in one ``error:`` line before any work.

The location lies under a regular file (``afile/...``), which no user can write to, root included
(permission bits do not stop root).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, assert_user_error, run_cli

GRID_CKPT = REPO / "edgedet" / "samples" / "checkpoints" / "grid.pt"


@pytest.fixture
def afile(tmp_path) -> Path:
    path = tmp_path / "afile"
    path.write_text("not a folder")
    return path


def _only(tmp_path: Path, *names: str) -> None:
    """Nothing was written besides ``names`` (no partial results, no run folders)."""
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(names)


COMMANDS = {
    "quickstart --out": lambda a, t: ["quickstart", "--out", str(a / "q")],
    "train --out": lambda a, t: ["train", "--model", "grid", "--data", "digits-grid", "--epochs", "1",
                                 "--out", str(a / "run")],
    "val --json": lambda a, t: ["val", "--weights", str(GRID_CKPT), "--json", str(a / "val.json")],
    "parity --json": lambda a, t: ["parity", str(t / "model.onnx"), "--json", str(a / "parity.json")],
    "bench --json": lambda a, t: ["bench", "--model", "grid", "--json", str(a / "bench.json")],
    "export --out": lambda a, t: ["export", "--model", "grid", "--random-init", "--out", str(a / "out")],
}


@pytest.mark.parametrize("case", list(COMMANDS))
def test_unwritable_output_fails_before_the_work(tmp_path, afile, case):
    (tmp_path / "model.onnx").write_bytes(b"never read: the output is checked first")
    result = run_cli(*COMMANDS[case](afile, tmp_path), cwd=tmp_path)
    assert_user_error(result, "cannot write", str(afile))
    assert result.stdout == ""  # no report, no progress: the check came first
    _only(tmp_path, "afile", "model.onnx")

