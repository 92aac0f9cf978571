"""decode_yolo: darknet's formulas, row order, dynamic shapes."""

from __future__ import annotations

import math

import pytest
import torch

from edgedet.ops.yolo import decode_yolo

ANCHORS = torch.tensor([[[116.0, 90.0], [156.0, 198.0]], [[10.0, 13.0], [30.0, 61.0]]])  # (S=2, A=2, 2)
STRIDES = (32, 16)


def heads(batch: int, h: int, w: int, classes: int = 3, seed: int = 0) -> list[torch.Tensor]:
    """Random raw heads for an input of h x w pixels at strides 32 and 16."""
    g = torch.Generator().manual_seed(seed)
    a = ANCHORS.shape[1]
    return [torch.randn(batch, a * (5 + classes), h // s, w // s, generator=g) * 2 for s in STRIDES]


def reference_decode(outputs, anchors, strides):
    """Darknet's yolo layer, one cell at a time, in (scale, anchor, y, x) order."""
    rows = []
    for head, scale_anchors, stride in zip(outputs, anchors, strides):
        b, ch, h, w = head.shape
        a = scale_anchors.shape[0]
        no = ch // a
        per_image = []
        for n in range(b):
            table = []
            for k in range(a):
                for y in range(h):
                    for x in range(w):
                        t = head[n, k * no:(k + 1) * no, y, x].tolist()
                        sig = [1 / (1 + math.exp(-v)) for v in t]
                        table.append([(x + sig[0]) * stride, (y + sig[1]) * stride,
                                      math.exp(t[2]) * scale_anchors[k, 0].item(),
                                      math.exp(t[3]) * scale_anchors[k, 1].item(), *sig[4:]])
            per_image.append(table)
        rows.append(torch.tensor(per_image))
    return torch.cat(rows, dim=1)


def test_matches_darknets_per_cell_formulas_on_a_non_square_input():
    outputs = heads(batch=2, h=64, w=96)
    decoded = decode_yolo(outputs, ANCHORS, STRIDES)
    assert decoded.shape == (2, 2 * (2 * 3 + 4 * 6), 8)
    torch.testing.assert_close(decoded, reference_decode(outputs, ANCHORS, STRIDES), rtol=1e-5, atol=1e-4)


def test_zero_logits_give_cell_centres_anchor_sizes_and_one_half():
    outputs = [torch.zeros(1, 2 * 6, 2, 3), torch.zeros(1, 2 * 6, 4, 6)]
    decoded = decode_yolo(outputs, ANCHORS, STRIDES)
    # First stride-32 row: anchor 0, cell (0, 0); last stride-32 row: anchor 1, cell (y=1, x=2).
    torch.testing.assert_close(decoded[0, 0], torch.tensor([16.0, 16.0, 116.0, 90.0, 0.5, 0.5]))
    torch.testing.assert_close(decoded[0, 11], torch.tensor([80.0, 48.0, 156.0, 198.0, 0.5, 0.5]))
    # The stride-16 scale follows: its first row is its anchor 0 at cell (0, 0).
    torch.testing.assert_close(decoded[0, 12], torch.tensor([8.0, 8.0, 10.0, 13.0, 0.5, 0.5]))


def test_rows_are_grouped_by_scale_then_anchor_y_x():
    classes, h, w = 1, 64, 96
    outputs = [torch.full((1, 2 * (5 + classes), h // s, w // s), -20.0) for s in STRIDES]
    # Light up one objectness logit: scale 1 (stride 16), anchor 1, y = 3, x = 5.
    outputs[1][0, 1 * (5 + classes) + 4, 3, 5] = 20.0
    decoded = decode_yolo(outputs, ANCHORS, STRIDES)
    first_scale = 2 * (h // 32) * (w // 32)
    expected = first_scale + 1 * (h // 16) * (w // 16) + 3 * (w // 16) + 5
    assert decoded[0, :, 4].argmax().item() == expected
    assert decoded[0, expected, 4] > 0.99 and (decoded[0, :, 4] > 0.5).sum() == 1


def test_batch_items_decode_independently():
    outputs = heads(batch=3, h=64, w=64)
    full = decode_yolo(outputs, ANCHORS, STRIDES)
    single = decode_yolo([o[2:3] for o in outputs], ANCHORS, STRIDES)
    torch.testing.assert_close(full[2:3], single, rtol=0, atol=0)


def test_output_dtype_follows_the_heads():
    outputs = [o.double() for o in heads(batch=1, h=64, w=64)]
    assert decode_yolo(outputs, ANCHORS, STRIDES).dtype == torch.float64


def test_mismatched_scales_are_rejected():
    with pytest.raises(ValueError, match="agree"):
        decode_yolo(heads(batch=1, h=64, w=64)[:1], ANCHORS, STRIDES)


class _Decode(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchors", ANCHORS.clone())

    def forward(self, p32: torch.Tensor, p16: torch.Tensor) -> torch.Tensor:
        return decode_yolo([p32, p16], self.anchors, STRIDES)


def test_exports_with_dynamic_batch_height_and_width():
    # Exported at one size, run at another: a grid or reshape baked in at export time would fail.
    b, h, w = torch.export.Dim("b", max=64), torch.export.Dim("h", min=2, max=64), torch.export.Dim("w", min=2, max=64)
    example = tuple(heads(batch=2, h=64, w=96))
    shapes = {"p32": {0: b, 2: h, 3: w}, "p16": {0: b, 2: 2 * h, 3: 2 * w}}
    program = torch.export.export(_Decode(), example, dynamic_shapes=shapes)
    other = heads(batch=3, h=128, w=64, seed=5)
    torch.testing.assert_close(program.module()(*other), decode_yolo(other, ANCHORS, STRIDES))
