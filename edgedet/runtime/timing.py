"""Per-stage timings of a run (read, preprocess, inference, ...) with their p50 and p95."""

from __future__ import annotations

import collections
import threading

import numpy as np

__all__ = ["STAGES", "StageTimes"]

STAGES = ("read", "preprocess", "inference", "postprocess", "draw", "write")


class StageTimes:
    """Milliseconds per stage, recorded from several threads; the last ``window`` samples kept."""

    def __init__(self, window: int = 20000) -> None:
        self._samples: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=window))
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._samples[stage].append(float(ms))

    def percentiles(self) -> dict[str, dict[str, float]]:
        """``{stage: {"p50": ms, "p95": ms, "n": count}}`` for every stage with samples."""
        with self._lock:
            samples = {k: np.asarray(v, dtype=np.float64) for k, v in self._samples.items() if len(v)}
        order = [s for s in STAGES if s in samples] + sorted(set(samples) - set(STAGES))
        return {s: {"p50": float(np.percentile(samples[s], 50)), "p95": float(np.percentile(samples[s], 95)),
                    "n": int(samples[s].size)} for s in order}
