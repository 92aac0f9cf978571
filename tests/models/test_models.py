"""Every registered model: shapes, backward, finiteness, determinism, decoding, configs."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import SMALL_INPUT, SMALL_OVERRIDES
from edgedet.errors import ModelError
from edgedet.models import create_decoder, create_model, get_entry, list_models
from edgedet.models.layers import class_names_of

FAMILIES = {"localizer", "grid", "yolov3", "yolov3-tiny", "unet"}


def small_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return create_model(name, **SMALL_OVERRIDES.get(name, {}))


def small_input(model, batch: int = 2, seed: int = 1) -> torch.Tensor:
    h, w = SMALL_INPUT.get(model.model_name, model.cfg.input_size)
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, model.cfg.in_channels, h, w, generator=g)


def as_list(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def test_registry_lists_the_five_families():
    assert FAMILIES <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_forward_shapes_and_types_same_in_train_and_eval(name):
    model = small_model(name)
    x = small_input(model)
    b, _, h, w = x.shape
    c = model.cfg.num_classes
    model.eval()
    with torch.no_grad():
        out_eval = model(x)
    model.train()
    out_train = model(x)
    assert type(out_eval) is type(out_train)
    outs = as_list(out_eval)
    assert len(outs) == len(as_list(out_train))
    task = get_entry(name).task
    if task == "localization":
        assert outs[0].shape == (b, 5 + c)
    elif task == "segmentation":
        assert outs[0].shape == (b, c, h, w)
    elif get_entry(name).family == "grid":
        assert outs[0].shape == (b, 5 + c, *model.cfg.grid)
    else:  # yolo: one map per stride, stride 32 first
        a = model.anchors.shape[1]
        if get_entry(name).spec.instance_masks:  # then a coefficient map per stride and the prototypes
            p, ps = model.cfg.num_protos, model.cfg.proto_stride
            extra, outs = outs[len(model.strides):], outs[:len(model.strides)]
            assert [tuple(o.shape) for o in extra] == [(b, a * p, h // s, w // s) for s in model.strides] + \
                [(b, p, h // ps, w // ps)]
        assert len(outs) == len(model.strides)
        assert list(model.strides) == sorted(model.strides, reverse=True)
        for o, s in zip(outs, model.strides):
            assert o.shape == (b, a * (5 + c), h // s, w // s)


@pytest.mark.parametrize("name", list_models())
def test_backward_reaches_every_parameter_and_stays_finite(name):
    model = small_model(name).train()
    x = small_input(model)
    loss = sum(o.float().square().mean() for o in as_list(model(x)))
    loss.backward()
    assert torch.isfinite(loss)
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", list_models())
def test_same_seed_same_weights_same_output(name):
    a, b = small_model(name, seed=3).eval(), small_model(name, seed=3).eval()
    x = small_input(a)
    with torch.no_grad():
        for oa, ob in zip(as_list(a(x)), as_list(b(x))):
            torch.testing.assert_close(oa, ob, rtol=0, atol=0)
            assert torch.isfinite(oa).all()
    c = small_model(name, seed=4).eval()
    with torch.no_grad():
        assert not torch.equal(as_list(a(x))[0], as_list(c(x))[0])


@pytest.mark.parametrize("name", list_models())
def test_batch_items_are_independent_in_eval(name):
    model = small_model(name).eval()
    x = small_input(model, batch=3)
    with torch.no_grad():
        full = as_list(model(x))
        single = as_list(model(x[1:2]))
    for f, s in zip(full, single):
        torch.testing.assert_close(f[1:2], s, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_decoder_output_layout(name):
    model = small_model(name).eval()
    decoder = create_decoder(model)
    x = small_input(model)
    b, _, h, w = x.shape
    c = model.cfg.num_classes
    with torch.no_grad():
        decoded = decoder(model(x))
    task = get_entry(name).task
    if get_entry(name).spec.instance_masks:  # (table, coefficients per row, prototypes)
        decoded, coefficients, _ = decoded
        assert coefficients.shape == (*decoded.shape[:2], model.cfg.num_protos)
    if task == "detection":
        assert decoded.dim() == 3 and decoded.shape[0] == b and decoded.shape[2] == 5 + c
        probs = decoded[..., 4:]
        assert ((probs >= 0) & (probs <= 1)).all()
        assert (decoded[..., 2:4] >= 0).all()
    elif task == "localization":
        score, box, label, class_scores = decoded
        assert score.shape == (b,) and box.shape == (b, 4) and label.shape == (b,)
        torch.testing.assert_close(class_scores.sum(1), torch.ones(b))
        assert (box[:, 2] >= box[:, 0]).all() and (box[:, 3] >= box[:, 1]).all()
    else:
        mask, probs = decoded
        assert mask.shape == (b, h, w) and mask.dtype == torch.int64
        torch.testing.assert_close(probs.sum(1), torch.ones(b, h, w))


@pytest.mark.parametrize("name", list_models())
def test_class_count_and_input_channels_configurable(name):
    model = create_model(name, num_classes=3, in_channels=1, **SMALL_OVERRIDES.get(name, {}))
    assert class_names_of(model.cfg) == ("0", "1", "2")
    x = small_input(model, batch=1)
    assert x.shape[1] == 1
    with torch.no_grad():
        out = as_list(model.eval()(x))
    assert all(torch.isfinite(o).all() for o in out)


def test_unknown_model_and_option_are_user_errors():
    with pytest.raises(ModelError, match="unknown model 'yolov9'.*localizer"):
        create_model("yolov9")
    with pytest.raises(ModelError, match="no option colour"):
        create_model("localizer", colour=3)
    with pytest.raises(ModelError, match="class names"):
        create_model("localizer", class_names=("a", "b"))
    with pytest.raises(ModelError, match="multiple"):
        create_model("unet", input_size=(100, 100))
    with pytest.raises(ModelError, match="cells"):
        create_model("grid", input_size=(50, 60))


def test_configs_are_frozen():
    model = create_model("localizer")
    with pytest.raises(Exception):
        model.cfg.num_classes = 3
