"""Graph surgery for deployment: deploy wrappers, ONNX, TorchScript, metadata (the export issue)."""
