"""ONNX Runtime targets (CPU fallback, ORT-format for ONNX Runtime Mobile): ``runtime`` is the contract."""
