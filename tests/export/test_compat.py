"""The torch APIs behind edgedet.export.compat still behave as the export needs."""

import torch

from edgedet.export.compat import paused_tracing, shape_as_tensor


def test_shape_as_tensor_traces_into_a_shape_not_a_constant():
    def clip_size(x):
        return shape_as_tensor(x)[1:3].float()

    traced = torch.jit.trace(clip_size, torch.zeros(1, 4, 6, 3))
    torch.testing.assert_close(traced(torch.zeros(2, 8, 10, 3)), torch.tensor([8.0, 10.0]))


def test_paused_tracing_keeps_the_body_out_of_the_trace():
    def f(x):
        with paused_tracing():
            y = x * 2  # computed during tracing, recorded as a constant
        return x + y

    traced = torch.jit.trace(f, torch.ones(3), check_trace=False)
    assert "aten::mul" not in str(traced.graph)
    torch.testing.assert_close(traced(torch.zeros(3)), torch.full((3,), 2.0))  # y frozen at tracing
