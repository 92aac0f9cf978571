"""The wheel is self-contained: installed into a fresh environment it carries the shipped
checkpoints and images and runs ``edgedet quickstart`` from a folder unrelated to the checkout.

The wheel is built from a copy of the sources (so stale files in the checkout's ``build/`` cannot
slip in) without build isolation or an index, and installed with ``--no-deps`` into a virtual
environment that sees the system's packages (torch and the rest come from there). The system may
hold edgedet installed in editable mode; every check asserts the wheel's copy is the one imported.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgedet import samples
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FAMILIES = ("grid", "localizer", "unet", "yolov3-tiny")
BIN = "Scripts" if os.name == "nt" else "bin"


def _env() -> dict[str, str]:
    # No PYTHONPATH: the checkout must not be importable from the venv.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return dict(env, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")


def _run(cmd: list, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "edgedet", src / "edgedet",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.onnx", "*.torchscript"))
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", dist, src], cwd=src)
    (built,) = dist.glob("edgedet-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", root], cwd=root)
    python = root / BIN / "python"
    # The system's pip, run by the venv's python, installs into the venv.
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", wheel], cwd=root)
    return root


def test_the_wheel_carries_every_shipped_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in FAMILIES:
        assert f"edgedet/samples/checkpoints/{model}.pt" in names
        assert f"edgedet/samples/checkpoints/{model}.csv" in names
    images = {f"edgedet/samples/images/{p.name}" for p in samples.images()}
    assert images and images <= names
    assert {"edgedet/samples/__init__.py", "edgedet/samples/README.md"} <= names


def test_the_installed_wheel_finds_its_own_checkpoints(venv, tmp_path):
    code = ("import edgedet, edgedet.samples as s; p = s.checkpoint('localizer'); "
            "print(edgedet.__file__); print(p); print(p.is_file()); print(len(s.images()))")
    out = _run([venv / BIN / "python", "-c", code], cwd=tmp_path).stdout.splitlines()
    package, ckpt = Path(out[0]).resolve(), Path(out[1]).resolve()
    assert package.is_relative_to(venv.resolve()), f"imported {package}, not the wheel's copy"
    assert ckpt.is_relative_to(venv.resolve()) and ckpt.name == "localizer.pt"
    assert out[2:] == ["True", str(len(samples.images()))]


def test_the_installed_wheel_runs_the_quickstart_from_any_folder(venv, tmp_path):
    proc = _run([venv / BIN / "edgedet", "quickstart", "--out", "q"], cwd=tmp_path, timeout=900)
    report = (tmp_path / "q" / "report.md").read_text()
    assert "report:" in proc.stdout
    assert "FAIL" not in report
    for model in FAMILIES:
        assert f"| checkpoint | `edgedet/samples/checkpoints/{model}.pt` |" in report
        assert (tmp_path / "q" / "plots" / f"{model}.png").is_file()  # the training logs came along
