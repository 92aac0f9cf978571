"""The torch-free runtime: what goes onto an edge device next to numpy, OpenCV and ONNX Runtime.

Nothing in this package imports torch at module level (a test enforces it); the rest of edgedet
may use its numpy helpers, never the reverse.
"""
