"""Core ML targets (iOS/macOS, Neural Engine, GPU, CPU): ``runtime`` is the contract, the rest its steps.

``convert`` (coremltools from PyTorch or TensorFlow), ``compress`` (palettization and weight-only
int8), ``mil`` (reading the ML Program), ``package`` (the .mlpackage), ``lint`` (Neural Engine rules in
``data/``), ``proxy`` (a numeric stand-in run on Linux, where Core ML cannot predict).
"""
