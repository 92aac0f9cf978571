"""The localizer made fully convolutional: same weights, exact on one window, one head per window."""

import copy

import pytest
import torch
from torch import nn

from edgedet import samples
from edgedet.models import create_model, get_entry, list_models
from edgedet.models.localizer import Localizer, fully_convolutional
from edgedet.models.spec import DenseConversion
from edgedet.models.weights import build_model, resolve_weights
from edgedet.ops.dense import decode_dense_localizer
from edgedet.ops.localizer import decode_localizer
from tests.conftest import SMALL_OVERRIDES, lively_model

OFFSETS = [(0, 0), (1, 0), (0, 3), (4, 5), (8, 12)]  # (row, col) of windows in a 136x164 map: 12x14


@pytest.fixture(scope="module")
def shipped():
    return build_model("localizer", resolve_weights("localizer", str(samples.checkpoint("localizer"))))


@pytest.fixture(scope="module")
def random_init():
    return lively_model("localizer")


def _frames(batch, h, w, seed=0):
    return torch.rand(batch, 1, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("which", ["random_init", "shipped"])
def test_exact_on_one_window(which, request):
    model = request.getfixturevalue(which)
    dense = fully_convolutional(model)
    x = _frames(4, 48, 60)
    with torch.no_grad():
        out = dense(x)
        ref = model(x)
    assert out.shape == (4, 15, 1, 1)
    torch.testing.assert_close(out[:, :, 0, 0], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["random_init", "shipped"])
def test_each_position_is_the_head_on_its_window(which, request):
    """The converted head at (i, j) is the original Linear head on the window's features."""
    model = request.getfixturevalue(which)
    dense = fully_convolutional(model)
    x = _frames(2, 136, 164, seed=1)
    with torch.no_grad():
        features = model.features(x)  # (2, 96, 17, 20)
        out = dense(x)
        fh, fw = model.features(x[..., :48, :60]).shape[2:]
        assert out.shape == (2, 15, 17 - fh + 1, 20 - fw + 1)
        for i, j in OFFSETS:
            ref = model.head(features[..., i:i + fh, j:j + fw])
            # 1e-5, plus float32's own rounding where the shipped head's logits reach ~15: the
            # convolution and the Linear layer sum the same 4,032 products in different orders
            # (seen: 1.1e-5 on an AVX2 CPU, relative 7.6e-7).
            torch.testing.assert_close(out[:, :, i, j], ref, atol=1e-5, rtol=2e-6)


def _unpadded_localizer(seed: int) -> Localizer:
    """A random localizer whose 3x3 convolutions are unpadded, the setting of the course's
    sliding-window example: there every window sees exactly what its crop sees."""
    torch.manual_seed(seed)
    model = create_model("localizer")
    for m in model.features.modules():
        if isinstance(m, nn.Conv2d):
            m.padding = (0, 0)
    with torch.no_grad():
        _, ch, fh, fw = model.features(torch.zeros(1, 1, 48, 60)).shape
    model.head[1] = nn.Linear(ch * fh * fw, model.cfg.hidden)
    for m in model.modules():  # BN statistics away from (0, 1), so the features are not trivial
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("seed", [0, 1])
def test_windows_equal_crops_when_convolutions_are_unpadded(seed):
    model = _unpadded_localizer(seed)
    dense = fully_convolutional(model)
    assert dense.stride == 8
    x = _frames(1, 136, 164, seed=seed)
    with torch.no_grad():
        out = dense(x)
        assert out.shape[2:] == ((136 - 48) // 8 + 1, (164 - 60) // 8 + 1)  # 12 x 14 windows
        for i, j in OFFSETS:
            crop = x[..., 8 * i:8 * i + 48, 8 * j:8 * j + 60]
            torch.testing.assert_close(out[:, :, i, j], model(crop), atol=1e-5, rtol=0)


def test_padded_windows_differ_from_crops_only_through_the_padding(shipped):
    """With 'same' padding a window of the dense map is not its crop (documented). The window at the
    frame's corner sees the frame's padding on two sides, as its crop does, so it is closer to the
    crop than the same content placed inside the frame, with neighbours on all four sides."""
    dense = fully_convolutional(shipped)
    crop = _frames(1, 48, 60, seed=3)
    frame = _frames(1, 96, 120, seed=4)
    frame[..., :48, :60] = crop
    interior = _frames(1, 96, 120, seed=4)
    interior[..., 24:72, 32:92] = crop
    with torch.no_grad():
        ref = shipped(crop)[0]
        corner = (dense(frame)[0, :, 0, 0] - ref).abs().max()
        inside = (dense(interior)[0, :, 3, 4] - ref).abs().max()
    assert 0 < corner < inside


def test_conversion_leaves_the_model_alone(shipped):
    model = copy.deepcopy(shipped).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dense = fully_convolutional(model)
    assert model.training and not dense.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # The dense network owns its weights: changing it does not touch the localizer.
    with torch.no_grad():
        dense.features[0][0].weight.add_(1.0)
    assert torch.equal(model.features[0][0].weight, before["features.0.0.weight"])


def test_spec_hook_gives_geometry(shipped):
    conversion = get_entry("localizer").spec.fully_convolutional(shipped)
    assert isinstance(conversion, DenseConversion)
    assert conversion.window == (48, 60) and conversion.stride == 8
    assert conversion.frame_size == (240, 320) and conversion.dataset == "digits-scene"
    x = _frames(1, 240, 320)
    with torch.no_grad():
        pred = conversion.decoder(conversion.model(x))
    assert pred.shape == (1, (30 - 6 + 1) * (40 - 7 + 1), 15)


@pytest.mark.parametrize("name", list_models())
def test_only_families_that_say_so_convert(name):
    spec = get_entry(name).spec
    if spec.fully_conv:
        model = create_model(name, **SMALL_OVERRIDES.get(name, {}))
        assert spec.fully_convolutional(model) is not None
    else:
        assert spec.fully_convolutional(nn.Identity()) is None


def test_decode_dense_map_by_hand():
    """Zero logits: every window predicts p_c 0.5, a box of half the window centred in it."""
    head = torch.zeros(1, 15, 2, 3)
    head[0, 5 + 7, 1, 2] = 5.0  # window (1, 2) is most sure of class 7
    pred = decode_dense_localizer(head, (48, 60), 8)
    assert pred.shape == (1, 6, 15)
    centres = torch.tensor([[30.0 + 8 * j, 24.0 + 8 * i] for i in range(2) for j in range(3)])
    torch.testing.assert_close(pred[0, :, :2], centres)
    torch.testing.assert_close(pred[0, :, 2:4], torch.tensor([[30.0, 24.0]]).expand(6, 2))
    torch.testing.assert_close(pred[0, :, 4], torch.full((6,), 0.5))
    assert int(pred[0, 5, 5:].argmax()) == 7 and int(pred[0, 0, 5:].argmax()) == 0
    torch.testing.assert_close(pred[0, :, 5:].sum(-1), torch.ones(6))


def test_decode_matches_the_localizer_decoder_per_window():
    head = torch.randn(2, 15, 3, 4, generator=torch.Generator().manual_seed(5))
    pred = decode_dense_localizer(head, (48, 60), 8)
    for i, j in [(0, 0), (2, 3), (1, 2)]:
        score, box, _, classes = decode_localizer(head[:, :, i, j], (48, 60))
        row = pred[:, i * 4 + j]
        shift = torch.tensor([8.0 * j, 8.0 * i])
        torch.testing.assert_close(row[:, :2], (box[:, :2] + box[:, 2:]) / 2 + shift)
        torch.testing.assert_close(row[:, 2:4], box[:, 2:] - box[:, :2])
        torch.testing.assert_close(row[:, 4], score)
        torch.testing.assert_close(row[:, 5:], classes)
