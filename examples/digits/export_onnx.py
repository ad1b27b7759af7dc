"""Exports the trained DigitsCNN to a single-file ONNX model for mbuild's ONNX example.

Uses a static [1, 1, 8, 8] input and opset 17 so on-device runtimes get a
fully shaped graph, then checks onnxruntime against PyTorch on val.npz.
"""

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from model import DigitsCNN

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "digits-onnx" / "digits_cnn.onnx"
OPSET = 17
TOLERANCE = 1e-4


def export(model: torch.nn.Module, path: Path) -> str:
    """Writes the ONNX file, preferring the legacy exporter for its BN folding."""
    dummy = (torch.zeros(1, 1, 8, 8),)
    names = {"input_names": ["image"], "output_names": ["logits"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.onnx.export(model, dummy, str(path), opset_version=OPSET, dynamo=False, **names)
        return "torchscript (dynamo=False)"
    except Exception as err:  # Legacy exporter removed or broken: use dynamo.
        print(f"legacy exporter failed ({err!r}); falling back to dynamo=True")
        program = torch.onnx.export(model, dummy, opset_version=OPSET, dynamo=True,
                                    external_data=False, **names)
        program.save(str(path), external_data=False)
        return "dynamo (dynamo=True)"


def check_graph(path: Path) -> None:
    """Fails unless the file is valid, self-contained and has the agreed I/O names."""
    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert not any(onnx.external_data_helper.uses_external_data(t)
                   for t in proto.graph.initializer), "weights must be embedded"


@torch.no_grad()
def compare(model: torch.nn.Module, path: Path) -> tuple[float, float]:
    """Returns the max |torch - onnxruntime| logit diff and ORT accuracy on val.npz."""
    val = np.load(HERE / "val.npz")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_logits = np.concatenate([sess.run(["logits"], {"image": x[None]})[0] for x in val["x"]])
    torch_logits = model(torch.from_numpy(val["x"])).numpy()
    acc = float((ort_logits.argmax(1) == val["y"]).mean())
    return float(np.abs(ort_logits - torch_logits).max()), acc


def main() -> None:
    """Loads weights.pt, exports, validates and reports parity with PyTorch."""
    model = DigitsCNN()
    model.load_state_dict(torch.load(HERE / "weights.pt", weights_only=True))
    model.eval()
    exporter = export(model, OUT)
    check_graph(OUT)
    max_diff, acc = compare(model, OUT)
    digest = hashlib.sha256(OUT.read_bytes()).hexdigest()
    print(f"exporter {exporter}  wrote {OUT} ({OUT.stat().st_size} bytes, sha256 {digest})")
    print(f"onnxruntime val_acc {acc:.4f}  max_abs_diff {max_diff:.3e}")
    if max_diff > TOLERANCE:
        raise SystemExit(f"ONNX/torch mismatch {max_diff:.3e} > {TOLERANCE}")


if __name__ == "__main__":
    main()
