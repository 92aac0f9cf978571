"""The private and deprecated torch APIs the export relies on, behind one small module.

Every use of an API that torch does not promise to keep lives here, so a torch release that moves
one breaks one file, with a test (``tests/export/test_compat.py``) that says which:

- :func:`paused_tracing`: ``torch._C._get_tracing_state`` / ``_set_tracing_state``. The ONNX NMS
  is an ``autograd.Function`` whose ``symbolic`` is all the exporter keeps; pausing the tracer
  while its Python loop runs keeps that loop out of the trace (export was ~10x slower without).
- :func:`shape_as_tensor`: ``torch._shape_as_tensor``, the input's shape as a tensor that the
  tracer records as a ``Shape`` operator, so clipping boxes to the input works for dynamic H, W.
  (``torch.tensor(x.shape)`` would bake the example's size into the graph.)
- :func:`export_onnx_torchscript`: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based
  exporter, which torch has deprecated in favour of the ``torch.export`` (dynamo) exporter.

The ``torch.export`` path: the graphs rely on a data-dependent NMS output size and a custom
``symbolic``; the dynamo exporter expresses the first with unbacked symbolic sizes and the second
with ``torch.onnx`` custom translation tables (``custom_translation_table``) mapping a
``torch.library`` op to ``NonMaxSuppression``. Moving there means registering the NMS as a
``torch.library.custom_op`` with a fake (meta) kernel, replacing :func:`paused_tracing` (no tracer
to pause) and :func:`shape_as_tensor` (``torch.export`` keeps symbolic shapes), and checking the
parity matrix again. Until then the TorchScript exporter stays, pinned here.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["paused_tracing", "shape_as_tensor", "export_onnx_torchscript"]


@contextlib.contextmanager
def paused_tracing() -> Iterator[None]:
    """Run the body untraced inside ``torch.jit.trace`` / the ONNX exporter (no-op otherwise)."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)


def shape_as_tensor(x: Tensor) -> Tensor:
    """``x.shape`` as an int64 tensor on the CPU that traces into a ``Shape`` operator."""
    return torch._shape_as_tensor(x)


def export_onnx_torchscript(module: nn.Module, example: Tensor, path: str | os.PathLike, *, opset: int,
                            input_names: Sequence[str], output_names: Sequence[str],
                            dynamic_axes: dict[str, dict[int, str]]) -> None:
    """``torch.onnx.export`` with the TorchScript-based exporter (see the module docstring)."""
    kwargs: dict[str, Any] = dict(opset_version=opset, input_names=list(input_names),
                                  output_names=list(output_names), dynamic_axes=dynamic_axes,
                                  do_constant_folding=True)
    torch.onnx.export(module, (example,), str(path), dynamo=False, **kwargs)
