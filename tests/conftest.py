"""Shared test helpers: paths, running the CLI in a subprocess, small model settings, lively models."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# darknet's cfg files and photos; present beside the repository in CI (shared/reference/darknet).
DARKNET_REFERENCE = REPO.parent / "shared" / "reference" / "darknet"

# Overrides that keep every family quick on a 2-core CPU; the tests parametrized over
# list_models() use them. Families not listed run at their defaults.
SMALL_OVERRIDES = {
    "yolov3": {"width": 0.25, "depth": 0.34},
    "yolov3-tiny": {"width": 0.25},
    "yolov3-tiny-seg": {"width": 0.25},
}
SMALL_INPUT = {"yolov3": (64, 96), "yolov3-tiny": (64, 96), "yolov3-tiny-seg": (64, 96), "unet": (64, 64)}

# A process that cannot import torch or torchvision, as on an edge device.
NO_TORCH_PRELUDE = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision'):
            raise ImportError(f'{name} is blocked in this test')
        return None
sys.meta_path.insert(0, _NoTorch())
"""


def noise_frames(model, batch: int, seed: int, size: tuple[int, int] | None = None):
    """uint8 BGR frames ``[batch, h, w, 3]`` of uniform noise, at ``size`` or the model's small test input.

    Noise, not uniform scenes: a uniform image makes an untrained detector emit exactly tied
    scores at every interior cell, where NMS's choice is ambiguous (tested separately).
    """
    import numpy as np

    h, w = size or SMALL_INPUT.get(model.model_name, model.cfg.input_size)
    return np.random.default_rng(seed).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)


def lively_model(name: str, input_size: tuple[int, int] | None = None):
    """A small seeded random model (eval mode) with spread-out outputs, like a trained one.

    Fresh BatchNorm statistics (mean 0, var 1) shrink activations layer after layer, so an
    untrained detector's scores collapse to its biases: thousands of exactly tied scores, where
    NMS's choice is legitimately ambiguous, or no detections at all. Calibrating BatchNorm on a
    batch of noise frames and spreading the YOLO prediction biases gives distinct scores and boxes.
    """
    import torch

    from edgedet.bench import lively
    from edgedet.models import create_model, get_entry

    torch.manual_seed(0)
    overrides = dict(SMALL_OVERRIDES.get(name, {}))
    if input_size is not None:
        overrides["input_size"] = tuple(input_size)
    model = create_model(name, **overrides)
    spec = get_entry(name).spec
    spread = -1.0 if spec.darknet or spec.instance_masks else None  # YOLO's prediction biases
    return lively(model, noise_frames(model, 4, seed=99, size=input_size), bias=spread)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, no_torch: bool = False, timeout: float = 120) -> CliResult:
    """Run ``python -m edgedet ARGS`` in a fresh process, as a user would."""
    if no_torch:
        code = NO_TORCH_PRELUDE + "\nfrom edgedet.cli import main\nmain()\n"
        cmd = [sys.executable, "-c", code, *args]
    else:
        cmd = [sys.executable, "-m", "edgedet", *args]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_user_error(result: CliResult, *fragments: str) -> None:
    """A user error: exit 1, exactly one ``error:`` line on stderr, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def darknet_reference() -> Path:
    if not DARKNET_REFERENCE.is_dir():
        pytest.skip(f"darknet reference files not found at {DARKNET_REFERENCE}")
    return DARKNET_REFERENCE


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def assert_sample_contract(dataset, sample: dict) -> None:
    """Check one sample against the data contract of edgedet.data.sample."""
    import numpy as np

    from edgedet.data.sample import IGNORE, TASKS, tight_boxes

    assert dataset.task in TASKS
    assert isinstance(dataset.class_names, tuple) and all(isinstance(n, str) for n in dataset.class_names)
    image = sample["image"]
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
    assert image.shape[2] in (1, 3)
    h, w = image.shape[:2]
    if dataset.image_size is not None:
        assert tuple(dataset.image_size) == (h, w)
    boxes, labels = sample["boxes"], sample["labels"]
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert labels.dtype == np.int64 and labels.shape == (len(boxes),)
    assert ((labels >= 0) & (labels < len(dataset.class_names))).all(), labels
    if len(boxes):
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert "id" in sample
    if not dataset.has_masks:
        assert "masks" not in sample and "semantic" not in sample
        return
    masks, semantic = sample["masks"], sample["semantic"]
    assert masks.dtype == np.uint8 and masks.shape == (len(boxes), h, w)
    assert set(np.unique(masks).tolist()) <= {0, 1}
    np.testing.assert_array_equal(tight_boxes(masks), boxes)
    assert semantic.dtype == np.uint8 and semantic.shape == (h, w)
    values = set(np.unique(semantic).tolist())
    assert values <= set(range(len(dataset.class_names) + 1)) | {IGNORE}, values
    covered = masks.any(axis=0)
    assert (semantic[covered] != 0).all()
    assert not ((semantic != 0) & (semantic != IGNORE) & ~covered).any()


def cli_in_process(capsys, *args: str) -> CliResult:
    """Run ``edgedet ARGS`` in this process (a fresh interpreter per error case costs seconds)."""
    from edgedet.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return CliResult(code, out.out, out.err)


@pytest.fixture
def small_tmpfs(tmp_path):
    """``mount(size) -> Path``: a tmpfs of ``size`` (e.g. ``"96k"``), a real disk that fills up;
    skipped where it cannot be mounted (not root, no mount rights). Unmounted afterwards."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"full{len(mounts)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                                capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode(errors='replace').strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", str(point)], capture_output=True)
