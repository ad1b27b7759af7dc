"""ExecuTorch targets (``.pte`` for Android and iOS): ``runtime`` is the contract, the rest its steps.

``lower`` (torch.export, PT2E static int8 with the XNNPACK quantizer, ``to_edge_transform_and_lower``
with one partitioner), ``delegation`` (what runs in a delegate and what falls back to portable kernels),
``program`` (ExecuTorch's Python runtime: loading and running a ``.pte``, reading its instructions).
"""
