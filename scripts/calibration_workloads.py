"""Print the FLOPs, weight bytes and largest single-op activation set of the calibration models.

MobileNet v1 1.0 (224x224) is written out here from the paper's layer table (Howard et al. 2017,
Table 1) so no model zoo is needed; the bench MobileNetV2 is examples/mobilenet/model.py. FLOPs are
torch's FlopCounterMode count (2 per multiply-add); the activation figure follows
mbuild.analyze: the largest inputs + outputs of one op, fp32. Run it and paste into
mbuild/devices/calibration.yaml when a workload changes:

    .venv/bin/python scripts/calibration_workloads.py
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
# (output channels, stride) of each depthwise-separable block after the 32-channel stem.
V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def mobilenet_v1() -> nn.Module:
    def conv_bn(cin, cout, k, s, groups=1):
        return [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    layers, cin = conv_bn(3, 32, 3, 2), 32
    for cout, stride in V1_BLOCKS:
        layers += conv_bn(cin, cin, 3, stride, groups=cin) + conv_bn(cin, cout, 1, 1)
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, 1000)]
    return nn.Sequential(*layers).eval()


def bench_mobilenet_v2() -> nn.Module:
    spec = importlib.util.spec_from_file_location("bench_mobilenet", ROOT / "examples/mobilenet/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MobileNetV2Small().eval()


def workload(model: nn.Module, shape=(1, 3, 224, 224)) -> dict:
    peak = 0

    def hook(mod, inputs, output):
        nonlocal peak
        if len(list(mod.children())) == 0:
            live = sum(t.numel() for t in inputs if torch.is_tensor(t)) + output.numel()
            peak = max(peak, live * 4)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(shape))
    for h in handles:
        h.remove()
    params = sum(p.numel() for p in model.parameters())
    return {"flops": int(counter.get_total_flops()), "params": int(params), "weights_bytes_fp32": int(params * 4),
            "peak_activation_bytes_fp32": int(peak)}


if __name__ == "__main__":
    for name, model in (("mobilenet_v1_1.0_224", mobilenet_v1()), ("bench_mobilenet_v2", bench_mobilenet_v2())):
        print(name, workload(model))
