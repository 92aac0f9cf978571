"""Parameter counts and GFLOPs."""

import pytest
import torch

from edgedet.models import count_parameters, create_model, model_gflops


def test_gflops_of_a_single_conv_is_two_flops_per_multiply_add():
    model = create_model("localizer")
    conv = model.features[0][0]
    # The first conv alone: 2 * Cin * k*k * Cout * H * W.
    expected_first = 2 * 1 * 9 * conv.out_channels * 48 * 60
    assert model_gflops(model) * 1e9 > expected_first


@pytest.mark.parametrize("name, darknet_bflops", [("yolov3", 65.86), ("yolov3-tiny", 5.56)])
def test_yolo_gflops_match_darknet_at_416(name, darknet_bflops):
    # The totals darknet's YOLO page lists for the official cfgs at 416x416 (billions of FLOPs).
    with torch.device("meta"):
        model = create_model(name)
    assert model_gflops(model) == pytest.approx(darknet_bflops, rel=0.01)


def test_yolov3_parameter_count_matches_the_darknet_layout():
    with torch.device("meta"):
        model = create_model("yolov3")
    # 62.0M parameters: the figure published for darknet's yolov3.cfg with 80 classes.
    assert count_parameters(model) == pytest.approx(61_949_149, rel=1e-3)
