"""PyTorch module -> ``.pte``: torch.export, optional PT2E static int8, lowering with one partitioner.

torch 2.13 removed ``torch.ao.quantization.quantize_pt2e`` and ``torch.export.export_for_training``:
quantization goes through ``torchao.quantization.pt2e`` and ``torch.export.export(...).module()``.
"""
from __future__ import annotations

import logging

from mbuild.errors import BuildError, MissingDependencyError
from mbuild.targets.executorch.quiet import quiet

log = logging.getLogger(__name__)

# Partitioner -> the ExecuTorch backend id its delegate calls name (what a runtime must register).
BACKENDS = {"xnnpack": "XnnpackBackend", "coreml": "CoreMLBackend", "vulkan": "VulkanBackend"}
WEIGHT_OPS = {"convolution", "linear", "addmm", "mm", "bmm", "matmul", "conv2d", "conv1d", "embedding"}


def require_executorch() -> None:
    """Import executorch's exir once (quietly), or say how to install it."""
    try:
        with quiet():
            import executorch.exir  # noqa: F401
    except ImportError:
        raise MissingDependencyError("executorch", "executorch", "The executorch runtime") from None


def export(module, example: tuple):
    """``torch.export`` of the source module at the manifest's static shapes."""
    import torch

    try:
        with quiet():
            return torch.export.export(module, example)
    except Exception as e:  # noqa: BLE001 - any export failure is a build failure with its cause
        raise BuildError(f"torch.export failed: {type(e).__name__}: {str(e)[:800]}") from e


def quantize_static(module, example: tuple, calibration: list[tuple], per_channel: bool = True):
    """PT2E static int8 with the XNNPACK quantizer (symmetric weights), calibrated on ``calibration``."""
    import torch
    try:
        with quiet():
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            graph = torch.export.export(module, example).module()
            quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))
            prepared = prepare_pt2e(graph, quantizer)
            with torch.no_grad():
                for args in calibration:
                    prepared(*args)
            converted = convert_pt2e(prepared)
            return torch.export.export(converted, example)
    except Exception as e:  # noqa: BLE001
        raise BuildError(f"PT2E static int8 (XNNPACK quantizer) failed: {type(e).__name__}: {str(e)[:800]}") from e


def export_and_lower(module, example: tuple, partitioner: str, min_os: str | None = None):
    """(exported program, delegation summary, .pte bytes, notes) of an fp32 module.

    Core ML converts a per-channel prelu only on 4-D inputs; when the Core ML partitioner's lowering
    fails on a prelu, nn.PReLU is rewritten as relu(x) - w * relu(-x) and lowered again (as the
    ``coreml`` runtime does), and the notes say so.
    """
    from mbuild.sources.pytorch import rewrite_prelu

    program = export(module, example)
    try:
        delegation, data = lower(program, partitioner, min_os)
        return program, delegation, data, []
    except BuildError as first:
        if partitioner != "coreml" or "prelu" not in str(first) or not rewrite_prelu(module):
            raise
        program = export(module, example)
        delegation, data = lower(program, partitioner, min_os)
        return program, delegation, data, [f"rewrote nn.PReLU as relu(x) - w * relu(-x) after the first lowering "
                                           f"failed: {first}"]


def xnnpack_partitioner(kept_off: list[dict] | None = None):
    """The XNNPACK partitioner, keeping off the delegate what ExecuTorch's XNNPACK backend accepts but cannot lower.

    ExecuTorch 1.5's XNNPACK channels-last pass runs prelu in NHWC and asserts ("Attempting to convert
    non-NHWC compatible node to NHWC") when a prelu's input is not 4-D, e.g. PReLU after a Linear layer
    (MTCNN's ONet), which fails the whole lowering. Such a prelu stays outside the delegate (it runs as
    portable kernels, which the delegation report names); each one kept off is appended to ``kept_off``.
    """
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.node_configs import PreluConfig
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class ChannelsLastPrelu(PreluConfig):
        def check_constraints(self, node, ep) -> bool:
            value = node.all_input_nodes[0].meta.get("val") if node.all_input_nodes else None
            rank = value.dim() if hasattr(value, "dim") else None
            if rank is not None and rank != 4:
                if kept_off is not None and node.name not in {k["node"] for k in kept_off}:
                    kept_off.append({"node": node.name, "op": "aten.prelu",
                                     "why": f"prelu on a {rank}-D input: ExecuTorch's XNNPACK backend lowers prelu "
                                            f"only in NHWC (4-D)"})
                return False
            return super().check_constraints(node, ep)

    return XnnpackPartitioner(configs=[ChannelsLastPrelu if c is PreluConfig else c for c in ALL_PARTITIONER_CONFIGS])


def partitioner_for(name: str, min_os: str | None = None, kept_off: list[dict] | None = None):
    """The ExecuTorch partitioner object for ``xnnpack`` | ``coreml`` | ``vulkan``."""
    if name == "xnnpack":
        return xnnpack_partitioner(kept_off)
    if name == "vulkan":
        from executorch.backends.vulkan.partitioner.vulkan_partitioner import VulkanPartitioner

        return VulkanPartitioner()
    if name == "coreml":
        from mbuild.workers.families import lean_coremltools

        try:
            with lean_coremltools():  # without the TensorFlow frontend coremltools probes for
                import coremltools as ct
                from executorch.backends.apple.coreml.compiler import CoreMLBackend
                from executorch.backends.apple.coreml.partition import CoreMLPartitioner
        except ImportError:
            raise MissingDependencyError("coremltools", "coreml", "The executorch Core ML partitioner") from None
        major = int(str(min_os or "17").split(".")[0])
        target = getattr(ct.target, f"iOS{major}", ct.target.iOS17)
        specs = CoreMLBackend.generate_compile_specs(minimum_deployment_target=target)
        return CoreMLPartitioner(compile_specs=specs)
    raise ValueError(f"unknown partitioner {name!r}")


def lower(program, partitioner: str, min_os: str | None = None):
    """``to_edge_transform_and_lower`` with one partitioner; returns (delegation summary, .pte bytes)."""
    from mbuild.targets.executorch.delegation import summarize

    kept_off: list[dict] = []
    try:
        with quiet():
            from executorch.exir import to_edge_transform_and_lower

            edge = to_edge_transform_and_lower(program, partitioner=[partitioner_for(partitioner, min_os, kept_off)])
            delegation = summarize(edge.exported_program())  # before to_executorch rewrites ops to out variants
            buffer = edge.to_executorch().buffer
    except (MissingDependencyError, BuildError):
        raise
    except Exception as e:  # noqa: BLE001
        raise BuildError(f"ExecuTorch lowering with the {partitioner} partitioner failed: {failure_text(e)}") from e
    if kept_off:
        delegation["kept_off_delegate"] = kept_off
    return delegation, bytes(buffer)


def failure_text(error: BaseException) -> str:
    """The exception and its innermost cause: ExecuTorch's pass manager wraps the real assertion in a generic one."""
    text = f"{type(error).__name__}: {str(error)[:500]}"
    root, seen = error, {id(error)}
    while (root.__cause__ or root.__context__) is not None and id(root.__cause__ or root.__context__) not in seen:
        root = root.__cause__ or root.__context__
        seen.add(id(root))
    if root is not error:
        text += f" (caused by {type(root).__name__}: {str(root)[:300]})"
    return text


def weight_tensors(program) -> list:
    """Weights of the exported program (before lowering) with their storage type and consuming op.

    The lowered weights live inside the delegate's payload, which ExecuTorch does not read back;
    this is the program the partitioner received, so int8 here is what the delegate was given.
    """
    from torch.export.graph_signature import InputKind

    from mbuild.recipes.audit import WeightTensor

    stored = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)
    names = {spec.arg.name: spec.target for spec in program.graph_signature.input_specs if spec.kind in stored}
    values = {**program.state_dict, **getattr(program, "constants", {})}
    tensors = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in names or not node.users:
            continue  # unused parameters (e.g. a BatchNorm folded into its conv by the quantizer) ship nowhere
        value = values.get(names[node.name])
        if value is None or value.dim() < 2:
            continue
        op, consumer = _consumer(node)
        if op not in WEIGHT_OPS:
            continue
        dtype = str(value.dtype).replace("torch.", "")
        tensors.append(WeightTensor(names[node.name], op, dtype, int(value.numel()),
                                    int(value.numel() * value.element_size()), consumer))
    return tensors


def _consumer(node, depth: int = 0) -> tuple[str, str]:
    """The op reading a weight, looking through dequantize / permute / view nodes."""
    for user in node.users:
        name = _op_name(user.target)
        if depth < 3 and any(k in name for k in ("dequantize", "permute", "view", "transpose", "t.default")):
            return _consumer(user, depth + 1)
        return name.split(".")[1] if name.count(".") >= 1 else name, user.name
    return "const", ""


def _op_name(target) -> str:
    """'aten.convolution.default' for an op overload, the function name otherwise."""
    name = getattr(target, "name", None)
    if callable(name):
        try:
            return str(name()).replace("::", ".")
        except Exception:  # noqa: BLE001
            pass
    return str(getattr(target, "__name__", target))
