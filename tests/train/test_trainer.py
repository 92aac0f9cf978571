"""The training loop: outputs, exact resume, early stopping, divergence, distributed launch."""

import csv
import os
import socket
import subprocess
import sys

import pytest
import torch

from edgedet.errors import DataError
from edgedet.train.checkpoint import load_checkpoint, model_from_checkpoint
from edgedet.train.trainer import TrainingError, TrainOptions, train
from tests.conftest import REPO

LOC = "digits-loc:n=32,glyphs=builtin"


def _options(tmp_path, name="run", **kw):
    base = dict(model="localizer", data=LOC, epochs=2, batch=16, workers=0, out=str(tmp_path / name), patience=0,
                model_config={"widths": (8, 16), "hidden": 32})
    base.update(kw)
    return TrainOptions(**base)


def _quiet(_msg):
    pass


def _assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_run_writes_checkpoints_log_and_plot(tmp_path):
    result = train(_options(tmp_path), say=_quiet, progress=False)
    out = tmp_path / "run"
    assert result.stopped == "finished" and result.epochs_run == 2 and result.best_epoch in (1, 2)
    for name in ("best.pt", "last.pt", "results.csv", "results.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train/loss", "train/obj", "train/box", "train/cls", "val/accuracy", "val/mean_iou", "val/map50",
            "val/map50_95", "lr"} <= set(rows[0])
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    last = load_checkpoint(out / "last.pt")  # torch.load(weights_only=True) inside
    state = last["train"]
    assert state["epoch"] == 2 and state["finished"] and state["optimizer"]["state"]
    assert {"torch"} <= set(state["rng"]) and state["scheduler"]["last_epoch"] == state["global_step"] == 4
    best = load_checkpoint(out / "best.pt")
    assert "optimizer" not in best["train"] and best["train"]["metrics"]["accuracy"] >= 0
    assert best["class_names"] == [str(i) for i in range(10)] and best["config"]["in_channels"] == 1
    model_from_checkpoint(best)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    return train(_options(tmp, "whole"), say=_quiet, progress=False), load_checkpoint(tmp / "whole" / "last.pt")


@pytest.mark.parametrize("stop_at", [(0, 0), (0, 1), (1, 0)], ids=["mid-epoch", "epoch-end", "second-epoch"])
def test_resume_equals_an_uninterrupted_run(tmp_path, stop_at, uninterrupted):
    whole, a = uninterrupted

    def interrupt(epoch, batch):
        if (epoch, batch) == stop_at:
            raise KeyboardInterrupt

    cut = train(_options(tmp_path, "cut"), say=_quiet, progress=False, on_batch_end=interrupt)
    assert cut.stopped == "interrupted"
    state = load_checkpoint(tmp_path / "cut" / "last.pt")["train"]
    assert (state["epoch"], state["batch"]) == (stop_at[0], stop_at[1] + 1) and not state["finished"]
    resumed = train(TrainOptions(model="", data="", epochs=0, out=str(tmp_path / "cut")), resume=True, say=_quiet,
                    progress=False)
    assert resumed.stopped == "finished"
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    _assert_same_state(a["state_dict"], b["state_dict"])  # bit-exact on the CPU
    for group_a, group_b in zip(a["train"]["optimizer"]["state"].values(), b["train"]["optimizer"]["state"].values()):
        _assert_same_state(group_a, group_b)

    def without_time(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert without_time(a["train"]["history"]) == without_time(b["train"]["history"])
    assert whole.best_metrics == resumed.best_metrics


def test_resume_refusals(tmp_path):
    with pytest.raises(TrainingError, match="does not exist"):
        train(_options(tmp_path, "none"), resume=True, say=_quiet, progress=False)
    train(_options(tmp_path, epochs=1), say=_quiet, progress=False)
    with pytest.raises(TrainingError, match="already finished"):
        train(TrainOptions(model="", data="", epochs=0, out=str(tmp_path / "run")), resume=True, say=_quiet)
    with pytest.raises(TrainingError, match="is a localizer run"):
        train(TrainOptions(model="grid", data="", epochs=0, out=str(tmp_path / "run")), resume=True, say=_quiet)
    with pytest.raises(TrainingError, match="already holds a run"):
        train(_options(tmp_path, epochs=1), say=_quiet, progress=False)


@pytest.mark.slow
def test_early_stopping(tmp_path, monkeypatch):
    import edgedet.train.loop as loop
    from edgedet.train.validate import ValResult

    scores = iter([0.5, 0.4, 0.6, 0.3, 0.2, 0.9])

    def fake_evaluate(model, val_set, **kw):
        f = next(scores)
        return ValResult({"accuracy": f, "mean_iou": f, "fitness": f})

    monkeypatch.setattr(loop, "evaluate", fake_evaluate)
    result = train(_options(tmp_path, epochs=6, patience=2), say=_quiet, progress=False)
    assert result.stopped == "early-stop" and result.epochs_run == 5 and result.best_epoch == 3
    assert load_checkpoint(tmp_path / "run" / "best.pt")["train"]["epoch"] == 3
    assert load_checkpoint(tmp_path / "run" / "last.pt")["train"]["stopped"] == "early-stop"


def test_diverging_loss_stops_with_a_clear_message(tmp_path):
    with pytest.raises(TrainingError, match="diverged; lower --lr"):
        train(_options(tmp_path, epochs=3, lr=1e32, grad_clip=0, warmup_epochs=0), say=_quiet, progress=False)


def test_dataset_that_does_not_fit_the_model(tmp_path):
    with pytest.raises(DataError, match="no masks"):
        train(_options(tmp_path, model="unet", model_config={}), say=_quiet)
    with pytest.raises(DataError, match="one object per image"):
        train(_options(tmp_path, data="clutter:n=4,glyphs=builtin"), say=_quiet)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_data_parallel_in_process(tmp_path, monkeypatch):
    # torchrun's environment for a single process: the DistributedDataParallel path over gloo.
    for key, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(key, value)
    lines = []
    result = train(_options(tmp_path, epochs=1, device="cpu"), say=lines.append, progress=False)
    assert result.stopped == "finished" and (tmp_path / "run" / "best.pt").is_file()
    assert not torch.distributed.is_initialized()  # torn down after the run
    assert load_checkpoint(tmp_path / "run" / "last.pt")["state_dict"].keys() == \
        model_from_checkpoint(tmp_path / "run" / "best.pt").state_dict().keys()  # no "module." prefixes


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    # torchrun starts two processes: DistributedDataParallel over gloo, a DistributedSampler
    # splitting the batches, rank 0 validating and writing.
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "edgedet", "train", "--model", "grid", "--data", "digits-grid:n=32,glyphs=builtin",
           "--epochs", "1", "--batch", "16", "--device", "cpu", "--workers", "0", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "batch 16 over 2 processes" in proc.stderr
    assert proc.stdout.count("best.pt") == 1  # one process reports
    state = load_checkpoint(out / "last.pt")["train"]
    assert state["finished"] and state["global_step"] == 2  # 32 images, 16 per step (8 per process)


def test_validation_on_the_first_images_only(tmp_path):
    from edgedet.data.sample import FirstSamples
    from edgedet.data.spec import build_dataset

    said = []
    result = train(_options(tmp_path, epochs=1, val_images=5), say=said.append, progress=False)
    assert result.stopped == "finished"
    assert any("32 train / 5 val images" in line for line in said), said
    full = build_dataset(LOC, "val")
    head = FirstSamples(full, 5)
    assert len(full) == 32 and len(head) == 5 and head.class_names == full.class_names
    assert all((head[i]["image"] == full[i]["image"]).all() for i in range(5))
    with pytest.raises(IndexError):
        head[5]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["train"]["options"]["val_images"] == 5


def test_val_images_must_be_positive(tmp_path):
    with pytest.raises(TrainingError, match="--val-images must be >= 1"):
        train(_options(tmp_path, val_images=0), say=_quiet, progress=False)
