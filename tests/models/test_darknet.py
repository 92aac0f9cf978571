"""Darknet interop: layout against the official cfgs, .weights round trips and errors, the resolver."""

from __future__ import annotations

import hashlib
import struct

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgedet.errors import WeightsError
from edgedet.models import create_model
from edgedet.models import darknet
from edgedet.models.darknet import (
    COCO_CLASSES,
    DarknetRelease,
    darknet_float_count,
    load_darknet_weights,
    parse_darknet_cfg,
    resolve_darknet_weights,
    save_darknet_weights,
)
from edgedet.models.layers import ConvBNAct

CFG = {"yolov3": "yolov3.cfg", "yolov3-tiny": "yolov3-tiny.cfg"}


def randomized(name: str, seed: int = 0, **overrides) -> nn.Module:
    """A model whose every saved value is random, BN running statistics included."""
    torch.manual_seed(seed)
    model = create_model(name, **overrides)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    return model


# ----------------------------------------------------------------------------------------- cfg


def test_cfg_parser_reads_sections_options_and_comments(tmp_path):
    path = tmp_path / "net.cfg"
    path.write_text("[net]\n# comment\nwidth = 416 ; trailing\n\n[convolutional]\nfilters=32\n"
                    "activation=leaky\n[route]\nlayers = -1, 61\n")
    sections = parse_darknet_cfg(path)
    assert [s.kind for s in sections] == ["net", "convolutional", "route"]
    assert sections[0].options == {"width": "416"}
    assert sections[1].get_int("filters", 0) == 32 and sections[1].get_int("size", 1) == 1
    assert sections[2].get_ints("layers") == (-1, 61)


def test_cfg_parser_rejects_garbage(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text("[net]\nthis is not an option\n")
    with pytest.raises(ValueError, match="bad.cfg:2"):
        parse_darknet_cfg(path)


def _activation(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return "linear"
    act = module[2]
    assert isinstance(act, nn.LeakyReLU) and act.negative_slope == pytest.approx(0.1)
    return "leaky"


@pytest.mark.parametrize("name", ["yolov3", "yolov3-tiny"])
def test_conv_layers_match_the_official_cfg(name, darknet_reference):
    sections = parse_darknet_cfg(darknet_reference / CFG[name])[1:]  # [net] is not a layer
    with torch.device("meta"):
        model = create_model(name)
    convs = model.darknet_convs()
    cfg_convs = [s for s in sections if s.kind == "convolutional"]
    assert len(convs) == len(cfg_convs)
    assert len({id(m) for m in convs}) == len(convs)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == len(convs)  # nothing left out
    for i, (module, section) in enumerate(zip(convs, cfg_convs)):
        conv = module if isinstance(module, nn.Conv2d) else module[0]
        size = section.get_int("size", 1)
        bn = section.get_int("batch_normalize", 0) == 1
        assert conv.out_channels == section.get_int("filters", 1), i
        assert conv.kernel_size == (size, size) and conv.stride == (section.get_int("stride", 1),) * 2, i
        assert conv.padding == ((size // 2,) * 2 if section.get_int("pad", 0) else (0, 0)), i
        assert isinstance(module, ConvBNAct) == bn and (conv.bias is None) == bn, i
        assert _activation(module) == section.options.get("activation", "logistic"), i
    for section in sections:
        if section.kind == "shortcut":
            assert section.options.get("activation") == "linear"
        if section.kind == "upsample":
            assert section.get_int("stride", 2) == 2
    yolo = [s for s in sections if s.kind == "yolo"]
    anchors = [int(v) for v in yolo[0].options["anchors"].split(",")]
    assert tuple(zip(anchors[::2], anchors[1::2])) == model.cfg.anchors
    assert tuple(s.get_ints("mask") for s in yolo) == model.cfg.masks  # cfg order = output order
    assert all(s.get_int("classes", 0) == model.cfg.num_classes for s in yolo)
    assert all(s.get_int("num", 0) == len(model.cfg.anchors) for s in yolo)


def run_cfg(sections, convs, x: torch.Tensor) -> list[torch.Tensor]:
    """Darknet's forward pass, layer by layer as the cfg lists them, with the model's convs."""
    convs = iter(convs)
    layers: list[torch.Tensor] = []
    yolo = []
    for s in sections:
        if s.kind == "convolutional":
            x = next(convs)(x)
        elif s.kind == "shortcut":
            x = x + layers[len(layers) + s.get_int("from", 0)]
        elif s.kind == "route":
            x = torch.cat([layers[i if i >= 0 else len(layers) + i] for i in s.get_ints("layers")], 1)
        elif s.kind == "upsample":
            x = F.interpolate(x, scale_factor=s.get_int("stride", 2), mode="nearest")
        elif s.kind == "maxpool":
            size, stride = s.get_int("size", 1), s.get_int("stride", 1)
            pad = size - 1  # darknet's default padding, all of it at the right/bottom for size 2
            x = F.max_pool2d(F.pad(x, (0, pad, 0, pad), value=float("-inf")), size, stride)
        elif s.kind == "yolo":
            yolo.append(x)
        else:
            raise AssertionError(f"unexpected layer {s.kind}")
        layers.append(x)
    return yolo


@pytest.mark.parametrize("name", ["yolov3", "yolov3-tiny"])
def test_forward_computes_what_the_cfg_describes(name, darknet_reference):
    # Routes, shortcuts, upsampling and pooling as darknet runs them from the cfg, fed with the
    # model's own conv layers, must give the model's outputs.
    sections = parse_darknet_cfg(darknet_reference / CFG[name])[1:]
    model = randomized(name).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = run_cfg(sections, model.darknet_convs(), x)
        outputs = model(x)
    assert len(outputs) == len(expected)
    for out, ref in zip(outputs, expected):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_coco_names_are_darknets_classes_in_darknets_order(darknet_reference):
    names = (darknet_reference / "coco.names").read_text().split("\n")
    names = [n.strip() for n in names if n.strip()]
    darknet_spelling = {"motorcycle": "motorbike", "airplane": "aeroplane", "couch": "sofa",
                        "potted plant": "pottedplant", "dining table": "diningtable", "tv": "tvmonitor"}
    assert len(COCO_CLASSES) == len(set(COCO_CLASSES)) == 80
    assert [darknet_spelling.get(n, n) for n in COCO_CLASSES] == names


# ------------------------------------------------------------------------------------- weights


@pytest.mark.parametrize("name, floats, file_bytes", [
    ("yolov3", 62_001_757, 248_007_048),
    ("yolov3-tiny", 8_858_734, 35_434_956),
])
def test_float_counts_match_the_official_files(name, floats, file_bytes):
    # The official yolov3.weights / yolov3-tiny.weights are these sizes: a 20-byte header + floats.
    with torch.device("meta"):
        model = create_model(name)
    assert darknet_float_count(model) == floats and 20 + 4 * floats == file_bytes


@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov3"])
def test_save_then_load_reproduces_the_state_dict(name, tmp_path):
    source = randomized(name, seed=1)
    path = save_darknet_weights(source, tmp_path / f"{name}.weights")
    assert path.stat().st_size == 20 + 4 * darknet_float_count(source)
    assert list(tmp_path.iterdir()) == [path]  # the atomic write leaves no temporary behind
    target = randomized(name, seed=2)
    header = load_darknet_weights(target, path)
    assert (header.major, header.minor, header.revision, header.seen) == (0, 2, 0, 0)
    expected, loaded = source.state_dict(), target.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):
            continue  # darknet does not store it
        assert torch.equal(loaded[key], value), key


def test_old_header_with_32_bit_seen_loads(tmp_path):
    model = randomized("yolov3-tiny", width=1.0)
    new = save_darknet_weights(model, tmp_path / "new.weights").read_bytes()
    old = tmp_path / "old.weights"
    old.write_bytes(struct.pack("<4i", 0, 1, 0, 1234) + new[20:])
    fresh = randomized("yolov3-tiny", seed=5)
    header = load_darknet_weights(fresh, old)
    assert (header.major, header.minor, header.seen) == (0, 1, 1234) and not header.seen_is_int64
    torch.testing.assert_close(fresh.state_dict(), model.state_dict())


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("darknet") / "yolov3-tiny.weights"
    return save_darknet_weights(randomized("yolov3-tiny"), path)


def test_truncated_file_names_both_float_counts(tiny_weights, tmp_path):
    short = tmp_path / "yolov3-tiny.weights"
    short.write_bytes(tiny_weights.read_bytes()[:-4000])
    with pytest.raises(WeightsError, match=r"^yolov3-tiny.weights holds 8,857,734 floats but "
                                           r"yolov3-tiny with 80 classes needs 8,858,734$"):
        load_darknet_weights(create_model("yolov3-tiny"), short)


def test_too_long_or_ragged_files_are_refused(tiny_weights, tmp_path):
    long = tmp_path / "long.weights"
    long.write_bytes(tiny_weights.read_bytes() + b"\0" * 8)
    with pytest.raises(WeightsError, match="holds 8,858,736 floats but"):
        load_darknet_weights(create_model("yolov3-tiny"), long)
    ragged = tmp_path / "ragged.weights"
    ragged.write_bytes(tiny_weights.read_bytes() + b"\0")
    with pytest.raises(WeightsError, match="8,858,734 floats and 1 stray bytes"):
        load_darknet_weights(create_model("yolov3-tiny"), ragged)


def test_wrong_class_count_is_refused(tiny_weights):
    model = create_model("yolov3-tiny", num_classes=3)
    with pytest.raises(WeightsError, match="holds 8,858,734 floats but yolov3-tiny with 3 classes needs"):
        load_darknet_weights(model, tiny_weights)


def test_the_other_variants_file_is_refused(tiny_weights):
    with torch.device("meta"):
        model = create_model("yolov3")
    with pytest.raises(WeightsError, match="but yolov3 with 80 classes needs 62,001,757"):
        load_darknet_weights(model, tiny_weights)


def test_scaled_and_non_yolo_models_are_refused(tmp_path, tiny_weights):
    with pytest.raises(WeightsError, match="width=1 and depth=1"):
        load_darknet_weights(create_model("yolov3-tiny", width=0.5), tiny_weights)
    with pytest.raises(WeightsError, match="width=1 and depth=1"):
        save_darknet_weights(create_model("yolov3", width=0.25, depth=0.34), tmp_path / "x.weights")
    with pytest.raises(WeightsError, match="no darknet layout"):
        load_darknet_weights(create_model("localizer"), tiny_weights)
    assert not (tmp_path / "x.weights").exists()


def test_missing_and_tiny_files_are_user_errors(tmp_path):
    model = create_model("yolov3-tiny")
    with pytest.raises(WeightsError, match="cannot read darknet weights"):
        load_darknet_weights(model, tmp_path / "nope.weights")
    stub = tmp_path / "stub.weights"
    stub.write_bytes(b"\0" * 10)
    with pytest.raises(WeightsError, match="too short"):
        load_darknet_weights(model, stub)


def test_random_bytes_are_not_a_weights_file(tmp_path):
    junk = tmp_path / "junk.weights"
    junk.write_bytes(struct.pack("<3i", 1283427103, -5, 7) + bytes(range(256)) * 8)
    with pytest.raises(WeightsError, match=r"not a darknet \.weights file \(header version 1283427103\.-5\.7\)"):
        load_darknet_weights(create_model("yolov3-tiny"), junk)


# ------------------------------------------------------------------------------------ resolver


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub directory, and no network: downloads fail unless a test allows them."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(url, dest):
        raise OSError("network is unreachable")

    monkeypatch.setattr(darknet, "_download", offline)
    return tmp_path


def test_a_file_already_in_the_hub_is_used(hub, tiny_weights):
    target = hub / "checkpoints" / "yolov3-tiny.weights"
    target.parent.mkdir()
    target.write_bytes(tiny_weights.read_bytes())
    assert resolve_darknet_weights("darknet:yolov3-tiny") == target
    model = create_model("yolov3-tiny")
    load_darknet_weights(model, "darknet:yolov3-tiny")
    torch.testing.assert_close(model.state_dict(), randomized("yolov3-tiny").state_dict())


def test_offline_gives_one_line_saying_where_to_put_the_file(hub):
    with pytest.raises(WeightsError) as info:
        resolve_darknet_weights("darknet:yolov3")
    message = str(info.value)
    assert "\n" not in message and "network is unreachable" in message
    assert "https://pjreddie.com/media/files/yolov3.weights" in message
    assert str(hub / "checkpoints" / "yolov3.weights") in message


def test_a_checksum_mismatch_is_refused_and_leaves_nothing(hub, monkeypatch):
    urls = []

    def wrong_file(url, dest):
        urls.append(url)
        dest.write_bytes(b"<html>not the weights</html>")

    monkeypatch.setattr(darknet, "_download", wrong_file)
    with pytest.raises(WeightsError, match="sha256"):
        resolve_darknet_weights("darknet:yolov3-tiny")
    assert urls == list(darknet.DARKNET_RELEASES["yolov3-tiny"].urls)  # every mirror was tried
    assert list((hub / "checkpoints").iterdir()) == []


def test_a_verified_download_is_moved_into_place(hub, monkeypatch):
    content = b"pretend weights"
    release = DarknetRelease("yolov3-tiny.weights", ("https://a.invalid/x", "https://b.invalid/x"),
                             hashlib.sha256(content).hexdigest())
    monkeypatch.setitem(darknet.DARKNET_RELEASES, "yolov3-tiny", release)

    def first_mirror_down(url, dest):
        if "a.invalid" in url:
            raise OSError("connection refused")
        dest.write_bytes(content)

    monkeypatch.setattr(darknet, "_download", first_mirror_down)
    path = resolve_darknet_weights("darknet:yolov3-tiny")
    assert path == hub / "checkpoints" / "yolov3-tiny.weights" and path.read_bytes() == content
    assert list(path.parent.iterdir()) == [path]


def test_unknown_spec_lists_the_known_ones(hub):
    with pytest.raises(WeightsError, match="known: darknet:yolov3, darknet:yolov3-tiny"):
        resolve_darknet_weights("darknet:yolov4")
