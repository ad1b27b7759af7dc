"""The digits conversions done by hand in one process: what mbuild's overhead is measured against.

torch.onnx.export -> ONNX fp32; onnxruntime.quantization dynamic and static (QDQ, per-channel)
int8; litert-torch -> .tflite fp32. No validation, no reports: just the converter calls.
"""
import sys
from pathlib import Path

import numpy as np
import torch

out = Path(sys.argv[1])
root = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
sys.path.insert(0, str(root / "examples" / "digits"))
from model import DigitsCNN  # noqa: E402

model = DigitsCNN()
model.load_state_dict(torch.load(root / "examples" / "digits" / "weights.pt", weights_only=True))
model.eval()
example = (torch.zeros(1, 1, 8, 8),)
torch.onnx.export(model, example, str(out / "fp32.onnx"), input_names=["image"], output_names=["logits"],
                  opset_version=17, dynamo=False)

from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static  # noqa: E402

quantize_dynamic(str(out / "fp32.onnx"), str(out / "int8-dyn.onnx"), weight_type=QuantType.QInt8, per_channel=True)
calib = np.load(root / "examples" / "digits" / "calib.npz")["x"][:128]


class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter(calib)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {"image": x[None]}


quantize_static(str(out / "fp32.onnx"), str(out / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)

import litert_torch  # noqa: E402

litert_torch.convert(model, example).export(str(out / "fp32.tflite"))
