"""``edgedet.samples``: shipped assets by model name, never by a path a name could smuggle in."""

import subprocess
import sys
from pathlib import Path

import pytest

import edgedet
from edgedet import samples
from edgedet.errors import EdgedetError
from tests.conftest import NO_TORCH_PRELUDE

FAMILIES = ("grid", "localizer", "unet", "vit", "yolov3-tiny", "yolov3-tiny-seg")


def test_the_folder_is_inside_the_package():
    assert samples.root() == Path(edgedet.__file__).parent / "samples"
    assert (samples.root() / "README.md").is_file()


@pytest.mark.parametrize("name", FAMILIES)
def test_every_shipped_name_resolves_to_its_checkpoint_and_log(name):
    ckpt, log = samples.checkpoint(name), samples.training_log(name)
    assert ckpt == samples.root() / "checkpoints" / f"{name}.pt" and ckpt.is_file()
    assert log == samples.root() / "checkpoints" / f"{name}.csv" and log.is_file()


def test_shipped_models_are_registered_models_with_their_own_checkpoint():
    from edgedet.models.registry import list_models
    from edgedet.train.checkpoint import load_checkpoint

    assert samples.shipped_models() == sorted(FAMILIES)
    assert set(samples.shipped_models()) <= set(list_models())
    for name in samples.shipped_models():
        assert load_checkpoint(samples.checkpoint(name))["model"] == name


def test_images_are_the_shipped_frames():
    names = [p.name for p in samples.images()]
    assert names == sorted(names) and "clutter_0.png" in names and "digits-loc_0.png" in names
    assert all(p.is_file() and p.parent == samples.root() / "images" for p in samples.images())


@pytest.mark.parametrize("name", ["no-such-model", "yolov3", "README", "grid.pt"])
def test_a_name_with_nothing_shipped_gives_none(name):
    assert samples.checkpoint(name) is None
    assert samples.training_log(name) is None


@pytest.mark.parametrize("name", [
    "", ".", "..", "../checkpoints/grid", "checkpoints/grid", "grid/../grid", "..\\grid", "grid\\x",
    "/etc/passwd", "C:grid", "grid..", "~/grid", " grid", "grid\x00", "-grid",
])
def test_a_name_that_could_leave_the_folder_is_refused(name):
    with pytest.raises(samples.SampleNameError, match="not a model name"):
        samples.checkpoint(name)
    with pytest.raises(ValueError):  # also a ValueError, and an EdgedetError for the CLI
        samples.training_log(name)
    assert issubclass(samples.SampleNameError, EdgedetError)


def test_a_folder_laid_out_the_same_way_can_stand_in(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "grid.pt").write_bytes(b"")
    assert samples.checkpoint("grid", folder=tmp_path) == tmp_path / "checkpoints" / "grid.pt"
    assert samples.training_log("grid", folder=tmp_path) is None
    assert samples.shipped_models(folder=tmp_path) == ["grid"]
    assert samples.images(folder=tmp_path) == []


def test_reading_samples_needs_no_torch():
    code = NO_TORCH_PRELUDE + "import edgedet.samples as s\nprint(len(s.images()), s.checkpoint('grid').name)\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(len(samples.images())), "grid.pt"]
