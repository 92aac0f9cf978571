"""The checkpoint format: round trip, refusal of code payloads, clear errors."""

import os
import pickle
import zipfile

import pytest
import torch

from edgedet.errors import CheckpointError
from edgedet.models import create_model
from edgedet.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint


def test_round_trip_restores_config_names_and_weights(tmp_path):
    torch.manual_seed(0)
    model = create_model("grid", num_classes=3, class_names=("a", "b", "c"))
    path = save_checkpoint(tmp_path / "grid.pt", model, train={"epoch": 4, "metrics": {"accuracy": 0.5}})
    ckpt = load_checkpoint(path)
    assert ckpt["model"] == "grid" and ckpt["class_names"] == ["a", "b", "c"]
    assert ckpt["input"] == {"channels": 1, "height": 48, "width": 60, "layout": "NCHW", "color": "grey",
                             "range": [0.0, 1.0]}
    assert ckpt["train"]["epoch"] == 4
    restored = model_from_checkpoint(path)
    assert restored.cfg == model.cfg and restored.model_name == "grid"
    for (k, a), (_, b) in zip(model.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(a, b), k
    assert not restored.training


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_code_payload_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "edgedet-checkpoint", "model": "grid", "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not (tmp_path / "PWNED").exists()


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not an edgedet checkpoint"):
        load_checkpoint(plain)


def test_truncated_file_is_an_error(tmp_path):
    path = save_checkpoint(tmp_path / "loc.pt", create_model("localizer"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_config(tmp_path):
    path = save_checkpoint(tmp_path / "loc.pt", create_model("localizer"))
    ckpt = load_checkpoint(path)
    ckpt["config"]["hidden"] = 64
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint(ckpt)
    ckpt["model"] = "nonexistent"
    with pytest.raises(CheckpointError, match="unknown model"):
        model_from_checkpoint(ckpt)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "loc.pt"
    save_checkpoint(path, create_model("localizer"))
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, create_model("localizer"))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["loc.pt"]
    assert zipfile.is_zipfile(path)


def test_refusal_gives_the_reason_without_torchs_advice(tmp_path, recwarn):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"payload": _Payload()}, protocol=2))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "refusing to load" in message and "posix.system" in message
    assert "weights_only" not in message and "\n" not in message
    path.write_bytes(pickle.dumps({"payload": _Payload()}, protocol=4))  # torch warns about protocol 4
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_directories_and_other_edgedet_files_are_named_for_what_they_are(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint"):
        load_checkpoint(tmp_path)
    graph = tmp_path / "grid.onnx"
    graph.write_bytes(b"\x08\x07")
    with pytest.raises(CheckpointError, match=r"exported graph, not a checkpoint.*edgedet parity.*edgedet run"):
        load_checkpoint(graph)
    scripted = tmp_path / "grid.ts"  # TorchScript under any name: known by its archive layout
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(scripted))
    with pytest.raises(CheckpointError, match="exported graph, not a checkpoint"):
        load_checkpoint(scripted)
    weights = tmp_path / "yolov3.weights"
    weights.write_bytes(b"\0" * 20)
    with pytest.raises(CheckpointError, match=r"darknet \.weights file, not an edgedet checkpoint"):
        load_checkpoint(weights)
