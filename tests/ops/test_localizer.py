"""Localizer decoding."""

import torch

from edgedet.ops.localizer import decode_localizer


def test_zero_logits_give_a_centred_half_size_box():
    head = torch.zeros(2, 15)
    head[1, 5 + 7] = 5.0
    score, box, label, class_scores = decode_localizer(head, (48, 60))
    torch.testing.assert_close(score, torch.full((2,), 0.5))
    torch.testing.assert_close(box, torch.tensor([[15.0, 12.0, 45.0, 36.0]]).expand(2, 4))
    assert label[1] == 7 and class_scores.shape == (2, 10)
