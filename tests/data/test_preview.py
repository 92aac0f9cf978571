"""Dataset previews: a sensible contact sheet, written atomically as PNG or JPG."""

import cv2
import numpy as np
import pytest

from edgedet.data import build_dataset, preview_dataset, render_preview
from edgedet.errors import DataError


@pytest.mark.parametrize("spec", ["digits-loc:glyphs=builtin", "digits-grid:glyphs=builtin",
                                  "clutter:glyphs=builtin,size=64"])
def test_render_preview_is_a_bgr_grid(spec):
    sheet = render_preview(build_dataset(spec), n=6, cell=96)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    assert 150 < sheet.shape[0] < 700 and 250 < sheet.shape[1] < 700
    assert sheet.std() > 10  # not a blank canvas
    # Boxes and masks are drawn in colour even on grey images.
    b, g, r = (sheet[..., c].astype(int) for c in range(3))
    assert ((np.abs(b - g) + np.abs(g - r)) > 60).sum() > 50


def test_preview_layout_options():
    dataset = build_dataset("digits-loc:glyphs=builtin,n=3")
    one_row = render_preview(dataset, n=3, cols=3, cell=60)
    one_col = render_preview(dataset, n=3, cols=1, cell=60)
    assert one_row.shape[1] > 2 * one_col.shape[1]
    assert render_preview(dataset, n=100).shape == render_preview(dataset, n=3).shape
    empty = render_preview(build_dataset("digits-loc:glyphs=builtin,n=0"))
    assert empty.ndim == 3 and empty.shape[0] > 0


def test_preview_dataset_writes_png_and_jpg(tmp_path):
    png = preview_dataset("digits-grid:glyphs=builtin", tmp_path / "out" / "grid.png", n=4)
    assert png == tmp_path / "out" / "grid.png"
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 100
    jpg = preview_dataset("clutter:glyphs=builtin,size=64", tmp_path / "clutter.jpg", n=2, split="val")
    assert cv2.imread(str(jpg)) is not None
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["clutter.jpg", "grid.png"]


def test_preview_rejects_other_extensions(tmp_path):
    with pytest.raises(DataError, match=r"preview.gif must end in \.png"):
        preview_dataset("digits-loc", tmp_path / "preview.gif")
    assert not any(tmp_path.iterdir())


def test_datasets_and_preview_work_without_torch(tmp_path):
    # The base install has no torch; looking at data must not need it.
    import subprocess
    import sys

    from tests.conftest import NO_TORCH_PRELUDE, REPO

    code = NO_TORCH_PRELUDE + f"""
from edgedet.data import build_dataset, preview_dataset
build_dataset('clutter:glyphs=builtin')[0]
preview_dataset('digits-loc:glyphs=builtin', {str(tmp_path / 'p.png')!r}, n=2)
assert 'torch' not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p.png").is_file()
