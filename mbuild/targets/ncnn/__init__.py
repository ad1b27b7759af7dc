"""ncnn targets (Android, Vulkan GPU or CPU): ``runtime`` is the contract, the rest its steps.

``convert`` (pnnx from a traced PyTorch model, else from the canonical ONNX), ``model`` (the .param text
and the .bin's weight storage), ``io`` (blob names and the dropped batch axis, the runner),
``lint`` (Vulkan coverage from ncnn's own layer registry).
"""
