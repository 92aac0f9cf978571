"""Comparing exported graphs with the PyTorch model they came from."""

from edgedet.parity.compare import (CompareResult, NMSRule, Tolerance, compare_dense, compare_detections,
                                    compare_exact, compare_masks, compare_outputs)

__all__ = ["CompareResult", "NMSRule", "Tolerance", "compare_dense", "compare_detections", "compare_exact",
           "compare_masks", "compare_outputs"]
