"""What ``edgedet parity`` takes (no torch here: the CLI reads its defaults from it)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

from edgedet.parity.compare import Tolerance

__all__ = ["ParityOptions"]


@dataclass(frozen=True)
class ParityOptions:
    weights: str | None = None
    samples: int = 4
    batch: int = 4
    providers: Sequence[str] | None = None  # restrict ONNX Runtime to these (cpu, cuda, tensorrt)
    tolerance: Tolerance | None = None  # None: the defaults for the graph's precision
    atol: float | None = None  # overrides of the tolerance's dense limits (``--atol``, ``--rtol``)
    rtol: float | None = None
    atol_out: dict[str, float] = field(default_factory=dict)
    # Also run OpenVINO in bf16 (judged with bf16 tolerances). Off by default: parity checks the
    # export, and reduced-precision arithmetic is a choice of runtime, not a property of the graph.
    bf16: bool = False

    def tolerance_for(self, precision: str) -> Tolerance:
        """The tolerance a graph of ``precision`` is judged with: given, else the precision's
        defaults, with ``atol`` / ``rtol`` applied on top."""
        defaults = {"fp16": Tolerance.fp16, "bf16": Tolerance.bf16, "int8": Tolerance.int8}.get(precision, Tolerance)
        tol = self.tolerance or defaults()
        return replace(tol, atol=tol.atol if self.atol is None else self.atol,
                       rtol=tol.rtol if self.rtol is None else self.rtol)
