"""YOLOv3 and YOLOv3-tiny: variants, configs, shapes, width/depth scaling, the decoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgedet.errors import ModelError
from edgedet.models import count_parameters, create_decoder, create_model
from edgedet.models.darknet import COCO_CLASSES
from edgedet.models.yolov3 import YOLOv3, YOLOv3Tiny, YoloConfig, YoloDecoder

SMALL = {"yolov3": {"width": 0.25, "depth": 0.34}, "yolov3-tiny": {"width": 0.25}}


def small(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return create_model(name, **{**SMALL[name], **overrides})


def test_yolov3_variant_is_darknets_coco_yolov3():
    model = small("yolov3")  # anchors, masks and strides do not depend on width / depth
    cfg = model.cfg
    assert isinstance(model, YOLOv3) and cfg.arch == "darknet53"
    assert cfg.num_classes == 80 and cfg.class_names == COCO_CLASSES and cfg.input_size == (416, 416)
    assert cfg.masks == ((6, 7, 8), (3, 4, 5), (0, 1, 2)) and model.strides == (32, 16, 8)
    expected = [[[116, 90], [156, 198], [373, 326]], [[30, 61], [62, 45], [59, 119]],
                [[10, 13], [16, 30], [33, 23]]]
    torch.testing.assert_close(model.anchors, torch.tensor(expected, dtype=torch.float32))


def test_tiny_variant_is_darknets_coco_yolov3_tiny():
    model = small("yolov3-tiny")
    assert isinstance(model, YOLOv3Tiny) and model.cfg.arch == "tiny"
    assert model.cfg.class_names == COCO_CLASSES
    assert model.cfg.masks == ((3, 4, 5), (0, 1, 2)) and model.strides == (32, 16)
    expected = [[[81, 82], [135, 169], [344, 319]], [[10, 14], [23, 27], [37, 58]]]
    torch.testing.assert_close(model.anchors, torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("name, params", [("yolov3", 61_949_149), ("yolov3-tiny", 8_852_366)])
def test_parameter_counts_of_the_full_models(name, params):
    # Golden numbers: conv weights, BN affine and prediction biases of darknet's layouts.
    with torch.device("meta"):
        assert count_parameters(create_model(name)) == params


@pytest.mark.parametrize("name", ["yolov3", "yolov3-tiny"])
@pytest.mark.parametrize("size", [(64, 96), (96, 64), (32, 32)])
def test_one_map_per_stride_for_any_multiple_of_32(name, size):
    model = small(name).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        outputs = model(x)
    assert [o.shape for o in outputs] == [(2, 3 * 85, size[0] // s, size[1] // s) for s in model.strides]


def test_train_and_eval_return_the_same_structure():
    model = small("yolov3")
    x = torch.rand(2, 3, 64, 64)
    train = model.train()(x)
    with torch.no_grad():
        evaluated = model.eval()(x)
    assert isinstance(train, list) and isinstance(evaluated, list)
    assert [t.shape for t in train] == [e.shape for e in evaluated]


def test_width_and_depth_scale_channels_and_repeats():
    cfg = YoloConfig(width=0.25, depth=0.34)
    assert [cfg.channels(c) for c in (32, 64, 1024, 255)] == [8, 16, 256, 64]
    assert [cfg.repeats(n) for n in (1, 2, 8, 8, 4)] == [1, 1, 3, 3, 1]
    assert YoloConfig(width=0.01).channels(32) == 8  # never below 8
    model = small("yolov3")
    units = [len(stage) - 1 for stage in model.backbone.stages]
    assert units == [1, 1, 3, 3, 1]
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.bias is None:
            assert m.out_channels % 8 == 0
    assert count_parameters(model) < 61_949_149 / 10


def test_prediction_biases_start_with_rare_objects():
    model = small("yolov3").eval()
    with torch.no_grad():
        decoded = create_decoder(model)(model(torch.rand(1, 3, 64, 64)))
    assert decoded[..., 4].median() < 0.05 and decoded[..., 5:].median() < 0.05


def test_decoder_holds_the_models_anchors_and_strides():
    model = small("yolov3-tiny").eval()
    decoder = create_decoder(model)
    assert isinstance(decoder, YoloDecoder) and decoder.strides == (32, 16)
    torch.testing.assert_close(decoder.anchors, model.anchors)
    with torch.no_grad():
        decoded = decoder(model(torch.rand(2, 3, 64, 96)))
    assert decoded.shape == (2, 3 * (2 * 3 + 4 * 6), 85)
    assert decoder.double().anchors.dtype == torch.float64  # follows .to() like any buffer


def test_tiny_stride_one_maxpool_is_darknets():
    # Darknet pads the right/bottom with -inf for its size-2 stride-1 maxpool; edge replication
    # gives the same maxima.
    pool = small("yolov3-tiny").features32[2:4]
    x = torch.randn(2, 4, 5, 6)
    darknet = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 2, 1)
    torch.testing.assert_close(pool(x), darknet, rtol=0, atol=0)


def test_tiny_stride_two_maxpools_keep_a_trailing_odd_row():
    # Darknet's size-2 stride-2 maxpool also pads right/bottom: 13 -> 7, not 6.
    pool = small("yolov3-tiny").features32[0]
    x = torch.randn(1, 4, 13, 13)
    darknet = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 2, 2)
    assert darknet.shape[-2:] == (7, 7)
    torch.testing.assert_close(pool(x), darknet, rtol=0, atol=0)


def test_class_names_and_custom_classes():
    model = small("yolov3", num_classes=2, class_names=("cat", "dog"))
    assert model.cfg.class_names == ("cat", "dog")
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 32, 32))[0].shape[1] == 3 * 7


@pytest.mark.parametrize("overrides, message", [
    ({"input_size": (416, 400)}, "multiple of 32"),
    ({"arch": "resnet"}, "arch must be one of"),
    ({"masks": ((0, 1, 2), (3, 4, 5))}, "3 output scales"),
    ({"masks": ((6, 7, 9), (3, 4, 5), (0, 1, 2))}, "outside the 9 anchors"),
    ({"masks": ((6, 7), (3, 4, 5), (0, 1, 2))}, "same number"),
    ({"anchors": ((10, 13), (16, -1))}, r"\(w, h\) pairs"),
    ({"width": 0}, "width and depth"),
    ({"class_names": ("a",)}, "class names"),
])
def test_invalid_configs_are_model_errors(overrides, message):
    with pytest.raises(ModelError, match=message):
        create_model("yolov3", **overrides)


def test_tiny_needs_two_masks():
    with pytest.raises(ModelError, match="tiny has 2 output scales"):
        create_model("yolov3-tiny", masks=((6, 7, 8), (3, 4, 5), (0, 1, 2)))


def test_nested_lists_from_json_become_the_same_config():
    listed = create_model("yolov3-tiny", width=0.25, anchors=[[10, 14], [23, 27], [37, 58], [81, 82],
                                                              [135, 169], [344, 319]],
                          masks=[[3, 4, 5], [0, 1, 2]])
    assert listed.cfg == small("yolov3-tiny").cfg
    with pytest.raises(ModelError, match="anchors must be"):
        create_model("yolov3", anchors=(10, 13, 16, 30))
