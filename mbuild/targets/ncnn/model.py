"""Reading an ncnn model: layers and blobs from the .param text, the weights' storage types from the .bin.

The .bin holds each layer's weights in layer order. A weight array (ncnn's ``load(w, 0)``) starts
with a 4-byte tag saying how it is stored: 0 for raw float32, ``0x01306B47`` for float16,
``0x000D4B38`` for int8; biases (``load(w, 1)``) are raw float32 without a tag. Walking the file
with the sizes the .param gives tells what the converter really wrote; the walk must end exactly
at the end of the file, or the census says it could not be measured.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MAGIC = "7767517"
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32 = 0
# layer type -> (param id of the weight count, param id of bias_term, param id of the bias length)
WEIGHTED = {
    "Convolution": (6, 5, 0),
    "ConvolutionDepthWise": (6, 5, 0),
    "Convolution1D": (6, 5, 0),
    "Convolution3D": (6, 5, 0),
    "Deconvolution": (6, 5, 0),
    "DeconvolutionDepthWise": (6, 5, 0),
    "InnerProduct": (2, 1, 0),
}
# layers that read weights from the .bin in a layout the census does not walk
OTHER_WEIGHTED = {"BatchNorm", "Scale", "PReLU", "MemoryData", "Embed", "LSTM", "GRU", "RNN", "LayerNorm",
                  "GroupNorm", "InstanceNorm", "MultiHeadAttention", "Bias", "Normalize", "Gemm", "RMSNorm",
                  "Convolution1D_ext", "DeformableConv2D", "Deconvolution1D", "Deconvolution3D",
                  "ConvolutionDepthWise1D", "ConvolutionDepthWise3D", "DeconvolutionDepthWise1D",
                  "DeconvolutionDepthWise3D", "SDPA"}


@dataclass
class Layer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, str] = field(default_factory=dict)

    def int_param(self, key: int, default: int = 0) -> int:
        value = self.params.get(key)
        return default if value is None else int(float(value))


def read_param(path: Path) -> list[Layer]:
    """The layers of a .param file (ncnn's text format: magic, counts, then one layer a line)."""
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines or lines[0] != [MAGIC]:
        raise ValueError(f"{path}: not an ncnn .param file (magic {MAGIC} missing)")
    layers = []
    for parts in lines[2:]:
        kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        ins, outs = parts[4:4 + n_in], parts[4 + n_in:4 + n_in + n_out]
        params = {}
        for item in parts[4 + n_in + n_out:]:
            key, _, value = item.partition("=")
            params[int(key)] = value  # array params (-23300 style keys) are kept as text
        layers.append(Layer(kind, name, ins, outs, params))
    return layers


def input_blobs(layers: list[Layer]) -> list[str]:
    return [layer.outputs[0] for layer in layers if layer.type == "Input"]


def output_blobs(layers: list[Layer]) -> list[str]:
    """Blobs some layer produces and none consumes, in the order they are produced."""
    consumed = {b for layer in layers for b in layer.inputs}
    return [b for layer in layers for b in layer.outputs if b not in consumed]


def weight_census(param: Path, bin_path: Path) -> tuple[list[dict], str | None]:
    """(weight arrays with layer, op, dtype, elements, bytes; None) or ([], why it could not be measured)."""
    layers = read_param(param)
    others = sorted({layer.type for layer in layers if layer.type in OTHER_WEIGHTED})
    if others:
        return [], f"layer types whose weight layout the census does not read: {', '.join(others)}"
    data = Path(bin_path).read_bytes()
    offset, found = 0, []
    for layer in layers:
        if layer.type not in WEIGHTED:
            continue
        count_key, bias_key, bias_len_key = WEIGHTED[layer.type]
        count = layer.int_param(count_key)
        if offset + 4 > len(data):
            return [], f"the .bin ends before the weights of layer {layer.name!r}"
        tag = int.from_bytes(data[offset:offset + 4], "little")
        offset += 4
        if tag == TAG_FP16:
            dtype, nbytes = "float16", _aligned(count * 2)
        elif tag == TAG_INT8:
            dtype, nbytes = "int8", _aligned(count)
        elif tag == TAG_FP32:
            dtype, nbytes = "float32", count * 4
        else:
            return [], f"layer {layer.name!r} stores its weights with tag {tag:#010x}, which the census does not read"
        offset += nbytes
        found.append({"layer": layer.name, "op": layer.type, "dtype": dtype, "elements": count, "bytes": nbytes})
        if layer.int_param(bias_key):
            offset += layer.int_param(bias_len_key) * 4  # raw float32, no tag
    if offset != len(data):
        return [], f"walking the weights ended at byte {offset:,} of {len(data):,}: a layout the census does not know"
    return found, None


def _aligned(n: int) -> int:
    return (n + 3) // 4 * 4
