"""ONNX Runtime targets (CPU fallback, ORT-format for ONNX Runtime Mobile): ``runtime`` is the contract.

``opencv`` runs the same .onnx through OpenCV DNN as a second consumer (``also_check: [opencv]``).
"""
