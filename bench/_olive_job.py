"""Runs inside bench/.olive-venv: Olive quantizes an ONNX model for CPU (static QDQ int8 and dynamic int8).

argv: MODEL.onnx CALIB.npz OUT_DIR. Prints one JSON line per workflow: its output model and wall time.
"""
import json
import sys
import time
from pathlib import Path

model, calib, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
script = out / "olive_data.py"
script.write_text(f'''
import numpy as np
from olive.data.registry import Registry


@Registry.register_dataset()
def mbuild_calibration(data_dir=None, **kwargs):
    x = np.load({str(calib)!r})["x"]
    return [({{"image": x[i][0]}}, 0) for i in range(len(x))]
''')
passes = {
    "static": {"type": "OnnxStaticQuantization", "data_config": "calib", "quant_format": "QDQ", "per_channel": True,
               "activation_type": "int8", "weight_type": "int8"},
    "dynamic": {"type": "OnnxDynamicQuantization", "per_channel": True, "weight_type": "int8"},
}
from olive.workflows import run  # noqa: E402

for name, spec in passes.items():
    config = {
        "input_model": {"type": "ONNXModel", "model_path": str(model)},
        "systems": {"local": {"type": "LocalSystem", "accelerators": [{"device": "cpu",
                                                                        "execution_providers": ["CPUExecutionProvider"]}]}},
        "data_configs": [{"name": "calib", "user_script": str(script),
                          "load_dataset_config": {"type": "mbuild_calibration"}}],
        "passes": {name: spec},
        "host": "local", "target": "local", "log_severity_level": 3,
        "output_dir": str(out / name), "cache_dir": str(out / "cache"),
    }
    start = time.perf_counter()
    try:
        run(config)
        found = sorted((out / name).rglob("*.onnx"))
        result = {"recipe": name, "model": str(found[0]) if found else None, "seconds": time.perf_counter() - start}
    except Exception as e:  # noqa: BLE001 - reported in the table, not raised
        message = " ".join(str(e).split())[:300]
        result = {"recipe": name, "error": f"{type(e).__name__}: {message}", "seconds": time.perf_counter() - start}
    print("RESULT " + json.dumps(result), flush=True)
