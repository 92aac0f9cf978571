"""The vit family: shapes, the Pre-LN / Post-LN block order, attention against PyTorch's own module,
position-embedding resizing, ONNX export with ONNX Runtime's attention fusion, parity, the torch-free
runtime and bad configs."""

from __future__ import annotations

import collections
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgedet.errors import ModelError
from edgedet.models import create_model, get_entry, list_models
from edgedet.models.vit import (
    MultiHeadSelfAttention,
    VitBlock,
    resize_pos_embed,
)
from tests.conftest import REPO, assert_user_error, cli_in_process, run_cli

SAMPLE_IMAGE = REPO / "edgedet" / "samples" / "images" / "digits-loc_0.png"
# digits-loc:glyphs=builtin validation sample 0, which that image is: a "7" at x1, y1, x2, y2.
SAMPLE_LABEL, SAMPLE_BOX = 7, (10.0, 0.0, 31.0, 32.0)


def spread(model: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """Perturb every parameter, biases and LayerNorm affines included, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def test_registered_as_a_localization_family():
    assert "vit" in list_models()
    entry = get_entry("vit")
    assert entry.task == "localization" and entry.family == "vit" and entry.spec.summary
    assert entry.spec.size_multiple(entry.config) == entry.config.patch_size
    assert not entry.spec.fully_conv


def test_forward_shape_at_the_config_size_and_at_another_multiple_of_the_patch():
    torch.manual_seed(0)
    model = create_model("vit").eval()
    assert model(torch.rand(3, 1, 48, 60)).shape == (3, 15)
    assert model(torch.rand(2, 1, 36, 72)).shape == (2, 15)
    assert model.cfg.grid == (8, 10) and model.pos_embed.shape == (1, model.cfg.dim, 8, 10)


def test_convolution_stem_gives_the_same_token_grid():
    torch.manual_seed(0)
    model = create_model("vit", stem_channels=16).eval()
    stem, patchify = model.patch_embed[0], model.patch_embed[2]
    assert (stem.stride, patchify.kernel_size, patchify.stride) == ((2, 2), (3, 3), (3, 3))
    x = torch.rand(2, 1, 48, 60)
    assert model.patch_embed(x).shape == (2, model.cfg.dim, 8, 10)
    assert model(x).shape == (2, 15)


def _block(norm_first: bool) -> VitBlock:
    torch.manual_seed(0)
    return spread(VitBlock(dim=16, heads=4, mlp_hidden=32, dropout=0.0, norm_first=norm_first), seed=1, scale=0.3)


def test_pre_ln_block_normalises_before_each_sublayer():
    block, x = _block(True), torch.randn(2, 5, 16)
    h = x + block.attn(block.norm1(x))
    expected = h + block.mlp(block.norm2(h))
    torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-6)


def test_post_ln_block_normalises_after_each_residual_and_differs_from_pre_ln():
    block, x = _block(False), torch.randn(2, 5, 16)
    h = block.norm1(x + block.attn(x))
    expected = block.norm2(h + block.mlp(h))
    torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-6)
    pre = _block(True)
    pre.load_state_dict(block.state_dict())
    assert (pre(x) - block(x)).abs().max() > 1e-2


def test_pre_ln_model_ends_with_a_layer_norm_and_post_ln_without_one():
    assert isinstance(create_model("vit").norm, nn.LayerNorm)
    assert isinstance(create_model("vit", norm_first=False).norm, nn.Identity)


def test_attention_equals_pytorch_multihead_attention_called_with_query_key_value():
    torch.manual_seed(0)
    ours = spread(MultiHeadSelfAttention(16, 4), seed=2, scale=0.2)
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key.weight, ours.value.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key.bias, ours.value.bias]))
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(3, 7, 16)
    expected, _ = ref(x, x, x, need_weights=False)  # returns (output, weights)
    torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-6)


def test_resize_pos_embed_keeps_the_grid_it_was_learned_for_and_resizes_others():
    pos = torch.randn(1, 8, 4, 5)
    assert resize_pos_embed(pos, (4, 5)) is pos
    assert resize_pos_embed(pos, (6, 10)).shape == (1, 8, 6, 10)
    constant = torch.full((1, 8, 4, 5), 0.25)
    torch.testing.assert_close(resize_pos_embed(constant, (7, 3)), torch.full((1, 8, 7, 3), 0.25))


def test_checkpoint_loads_into_another_input_size_with_resized_position_embeddings():
    torch.manual_seed(0)
    small = spread(create_model("vit"))
    big = create_model("vit", input_size=(96, 120)).eval()
    big.load_state_dict(small.state_dict())
    assert big.pos_embed.shape[-2:] == (16, 20)
    torch.testing.assert_close(big.pos_embed, F.interpolate(small.pos_embed, size=(16, 20), mode="bicubic"))
    # The same resize happens inside forward when the small model sees the big input.
    x = torch.rand(2, 1, 96, 120)
    torch.testing.assert_close(big(x), small(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overrides, fragment", [
    ({"patch_size": 7}, "does not tile"),
    ({"dim": 30, "heads": 4}, "multiple of heads"),
    ({"depth": 0}, "depth"),
    ({"dropout": 1.0}, "dropout"),
    ({"stem_channels": 8, "patch_size": 3, "input_size": (48, 60)}, "even patch_size"),
    ({"stem_channels": 8, "stem_depth": 0}, "stem_depth"),
])
def test_bad_config_is_a_model_error(overrides, fragment):
    with pytest.raises(ModelError, match=fragment):
        create_model("vit", **overrides)


def test_cli_refuses_an_input_size_the_patches_do_not_tile(capsys, tmp_path):
    result = cli_in_process(capsys, "export", "--model", "vit", "--random-init", "--imgsz", "50,60",
                            "--out", str(tmp_path / "out"))
    assert_user_error(result, "does not tile")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _export(tmp_path, norm_first: bool = True, formats=("onnx",)):
    from edgedet.export.api import ExportOptions, export_model
    from edgedet.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = spread(create_model("vit", norm_first=norm_first))
    ckpt = save_checkpoint(tmp_path / "ref.pt", model)
    files = export_model("vit", tmp_path, ExportOptions(formats=formats), weights=str(ckpt), say=lambda m: None)
    return model, files


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-ln", "post-ln"])
def test_exported_attention_is_fused_by_onnx_runtime(tmp_path, norm_first):
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    from edgedet.parity.runner import ParityOptions, check_file, format_report

    model, files = _export(tmp_path, norm_first)
    graph = onnx.load(str(files[0].path))
    plain = collections.Counter(n.op_type for n in graph.graph.node)
    assert plain["Attention"] == 0 and all(n.domain in ("", "ai.onnx") for n in graph.graph.node)
    cfg = model.cfg
    fused = optimize_model(str(files[0].path), model_type="vit", num_heads=cfg.heads, hidden_size=cfg.dim,
                           opt_level=0)
    ops = collections.Counter(n.op_type for n in fused.model.graph.node)
    assert ops["Attention"] == cfg.depth, ops
    assert ops["Softmax"] == 1  # only the decoder's class softmax is left outside the fused operators
    # The fused graph keeps edgedet's metadata and computes what PyTorch computes.
    fused_path = tmp_path / "vit.fused.onnx"
    fused.save_model_to_file(str(fused_path))
    report = check_file(fused_path, ParityOptions(samples=2, batch=2))
    assert report.passed, format_report(report)
    assert any(b.backend == "onnxruntime-cpu" and b.status != "skipped" for b in report.backends)


def test_exported_graph_passes_parity_at_fp32(tmp_path):
    from edgedet.parity.runner import ParityOptions, check_file, format_report

    _, files = _export(tmp_path, formats=("onnx", "torchscript"))
    for f in files:
        report = check_file(f.path, ParityOptions(samples=2, batch=2))
        assert report.passed, format_report(report)
        assert [b for b in report.backends if b.status != "skipped"]


def test_torch_free_runtime_runs_the_exported_graph(tmp_path):
    _, files = _export(tmp_path)
    out = tmp_path / "out.jsonl"
    result = run_cli("run", "--model", str(files[0].path), "--source", str(SAMPLE_IMAGE), "--save-json", str(out),
                     no_torch=True)
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (record["width"], record["height"]) == (60, 48)
    for det in record["detections"]:
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 <= x2 <= 60 and 0 <= y1 <= y2 <= 48 and 0 <= det["label"] < 10


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.slow
def test_shipped_checkpoint_finds_the_digit_in_the_sample_image(tmp_path):
    from edgedet.samples import checkpoint

    result = run_cli("export", "--model", "vit", "--weights", str(checkpoint("vit")), "--format", "onnx",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out.jsonl"
    result = run_cli("run", "--model", str(tmp_path / "vit.onnx"), "--source", str(SAMPLE_IMAGE), "--save-json",
                     str(out), no_torch=True)
    assert result.returncode == 0, result.stderr
    (det,) = json.loads(out.read_text())["detections"]
    assert det["label"] == SAMPLE_LABEL and _iou(det["box"], SAMPLE_BOX) > 0.5, det
