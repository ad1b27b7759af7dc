"""The full digits matrix (manifests/digits.yaml) done by hand in one Python process: mbuild's floor.

The same work a cold ``doit`` does for that manifest, without a build system: the reference
outputs and canonical ONNX (checked), each shared conversion once (ONNX, two Core ML ML Programs
for iOS 15 and 16, one float .tflite checked against the reference), every quantization of the
11 targets (cpu-auto's four candidates included), the ORT-format copies, and the validation runs
(every sample of the validation set on each variant that runs here, host latency beside the fp32
sibling; Core ML variants through an ONNX Runtime fp16 proxy, as mbuild does on Linux).
Usage: ``python bench/direct_digits.py OUT_DIR PROJECT_ROOT``; prints the wall time of its parts.
"""
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
out = Path(sys.argv[1])
root = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
parts: dict[str, float] = {}


def lap(name: str, since: list[float] = [T0]) -> None:  # noqa: B006 - a running clock
    now = time.perf_counter()
    parts[name] = now - since[0]
    since[0] = now


import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(root / "examples" / "digits"))
from model import DigitsCNN  # noqa: E402

val = np.load(root / "examples" / "digits" / "val.npz")
x_val, y_val = val["x"].astype(np.float32), val["y"]
calib = np.load(root / "examples" / "digits" / "calib.npz")["x"][:128].astype(np.float32)
model = DigitsCNN()
model.load_state_dict(torch.load(root / "examples" / "digits" / "weights.pt", weights_only=True))
model.eval()
with torch.no_grad():
    reference = model(torch.from_numpy(x_val)).numpy()
example = (torch.from_numpy(x_val[:1]),)
torch.onnx.export(model, example, str(out / "fp32.onnx"), input_names=["image"], output_names=["logits"],
                  opset_version=17, dynamo=False)
lap("imports + source (torch, reference, ONNX export)")

import onnxruntime as ort  # noqa: E402
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static  # noqa: E402
from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort  # noqa: E402
from onnxruntime.transformers.float16 import convert_float_to_float16  # noqa: E402


def ort_run(path: Path, x: np.ndarray) -> tuple[np.ndarray, list[float]]:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs, lat = [], []
    for i in range(len(x)):
        t = time.perf_counter()
        outs.append(s.run(None, {"image": x[i:i + 1]})[0][0])
        lat.append(time.perf_counter() - t)
    return np.stack(outs), lat[1:]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def check(name: str, got: np.ndarray) -> None:
    top1 = float((got.argmax(1) == reference.argmax(1)).mean())
    acc = float((got.argmax(1) == y_val).mean())
    print(f"{name}: cosine {cosine(reference, got):.5f}, top-1 agreement {top1:.4f}, accuracy {acc:.2%}", flush=True)


ref_onnx, _ = ort_run(out / "fp32.onnx", x_val)  # the canonical ONNX must reproduce the reference
assert cosine(reference, ref_onnx) > 0.9999
lap("canonical ONNX check")


class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter(calib)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {"image": x[None]}


def ort_variant(recipe: str, dst: Path) -> Path:
    import onnx

    if recipe == "fp32":
        dst.write_bytes((out / "fp32.onnx").read_bytes())
    elif recipe == "fp16":
        onnx.save(convert_float_to_float16(onnx.load(str(out / "fp32.onnx")), keep_io_types=True), str(dst))
    elif recipe == "int8-dyn":
        quantize_dynamic(str(out / "fp32.onnx"), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    else:
        quantize_static(str(out / "fp32.onnx"), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    convert_onnx_models_to_ort(dst, output_dir=dst.parent / f"{dst.stem}-ort",
                               optimization_styles=[OptimizationStyle.Fixed])
    return dst


fp32_lat = None
for target, recipe in (("cpu-fp32", "fp32"), ("cpu-fp16", "fp16"), ("cpu-int8", "int8"), ("cpu", "int8-dyn")):
    path = ort_variant(recipe, out / f"{target}.onnx")
    got, lat = ort_run(path, x_val)
    _, sibling = ort_run(out / "fp32.onnx", x_val[:50])
    check(target, got)
for recipe in ("int8", "int8-dyn", "fp16", "fp32"):  # cpu-auto: every candidate built and evaluated
    got, _ = ort_run(ort_variant(recipe, out / f"cpu-auto-{recipe}.onnx"), x_val)
    check(f"cpu-auto/{recipe}", got)
lap("ONNX Runtime: 8 variants + ORT format + validation runs")

BLOCKED = ("tensorflow", "sklearn", "executorch", "transformers")
for m in BLOCKED:  # as mbuild does: coremltools without the frontends and extras a PyTorch source never uses
    sys.modules[m] = None
import coremltools as ct  # noqa: E402
import coremltools.optimize.coreml as cto  # noqa: E402

for m in BLOCKED:
    del sys.modules[m]
program = torch.export.export(model, example).run_decompositions({})
packages = {}
for os_target in ("iOS16", "iOS15"):
    packages[os_target] = ct.convert(program, inputs=[ct.TensorType(name="image", shape=(1, 1, 8, 8))],
                                     outputs=[ct.TensorType(name="logits", dtype=np.float32)], convert_to="mlprogram",
                                     minimum_deployment_target=getattr(ct.target, os_target),
                                     compute_precision=ct.precision.FLOAT16)
packages["iOS16"].save(str(out / "ios-ane.mlpackage"))
packages["iOS15"].save(str(out / "ios-gpu.mlpackage"))
w8 = cto.linear_quantize_weights(packages["iOS16"], cto.OptimizationConfig(
    global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")))
w8.save(str(out / "ios-ane-w8.mlpackage"))
fp16_proxy, _ = ort_run(out / "cpu-fp16.onnx", x_val)  # Core ML cannot predict on Linux: the proxy estimate
for target in ("ios-ane", "ios-gpu", "ios-ane-w8"):
    check(f"{target} (proxy)", ort_run(out / "cpu-fp16.onnx", x_val)[0])
lap("Core ML: 2 conversions, 3 packages, proxy runs")

import litert_torch  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from ai_edge_quantizer import qtyping, quantizer  # noqa: E402

litert_torch.convert(model, example).export(str(out / "float.tflite"))


def tfl_run(path: Path, x: np.ndarray) -> np.ndarray:
    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for k in range(len(x)):
        xi = x[k:k + 1]
        if i["dtype"] == np.int8:
            s, z = i["quantization"]
            xi = np.clip(np.round(xi / s + z), -128, 127).astype(np.int8)
        it.set_tensor(i["index"], xi)
        it.invoke()
        y = it.get_tensor(o["index"])[0]
        if o["dtype"] == np.int8:
            s, z = o["quantization"]
            y = (y.astype(np.float32) - z) * s
        outs.append(y)
    return np.stack(outs)


assert cosine(reference[:256], tfl_run(out / "float.tflite", x_val[:256])) > 0.999  # the float check
qz = quantizer.Quantizer(str(out / "float.tflite"))
qz.add_static_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 8, 8)
signature = qz.get_signature_list() if hasattr(qz, "get_signature_list") else None
key = next(iter(Interpreter(model_path=str(out / "float.tflite")).get_signature_list()))
arg = Interpreter(model_path=str(out / "float.tflite")).get_signature_list()[key]["inputs"][0]
stats = qz.calibrate({key: [{arg: c[None]} for c in calib]})
(out / "android-nnapi.tflite").write_bytes(bytes(qz.quantize(stats).quantized_model))
qz = quantizer.Quantizer(str(out / "float.tflite"))
qz.update_quantization_recipe(".*", qtyping.TFLOperationName.ALL_SUPPORTED, qtyping.OpQuantizationConfig(
    weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
    compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True), algorithm_key="float_casting")
(out / "android-gpu.tflite").write_bytes(bytes(qz.quantize().quantized_model))
for target in ("android-nnapi", "android-gpu"):
    check(target, tfl_run(out / f"{target}.tflite", x_val))
    tfl_run(out / "float.tflite", x_val[:50])  # the fp32 sibling's latency
lap("LiteRT: 1 conversion + float check, 2 quantizations, validation runs")
parts["total"] = time.perf_counter() - T0
for name, seconds in parts.items():
    print(f"{name}: {seconds:.1f} s")
