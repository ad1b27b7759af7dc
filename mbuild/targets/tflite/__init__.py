"""LiteRT/TFLite targets (Android CPU, NNAPI and GPU delegates): ``runtime`` is the contract, the rest its steps.

``convert`` (litert-torch, or onnx2tf from the canonical ONNX), ``quant`` (ai-edge-quantizer recipes),
``model`` and ``io`` (reading the flatbuffer and its tensors), ``lint`` (delegate op tables in ``data/``),
``debug`` (per-layer error attribution).
"""
