"""The PyTorch source's FLOP count: PyTorch's own formulas, without importing TorchDynamo."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import sys
import torch
import mbuild.sources.pytorch as source

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16 * 8 * 8, 10)
        self.gru = torch.nn.GRU(10, 20, batch_first=True)

    def forward(self, x):
        z = self.fc(self.conv(x).relu().flatten(1))
        seq, _ = self.gru(z.unsqueeze(1).repeat(1, 4, 1))
        return torch.bmm(seq, seq.transpose(1, 2))

model = Net().eval()
x = torch.randn(1, 3, 8, 8)
source.example_args = lambda manifest: (x,)
mine = source.count_flops(None, model)
dynamo = "torch._dynamo" in sys.modules
from torch.utils.flop_counter import FlopCounterMode
counter = FlopCounterMode(display=False)
with torch.inference_mode(), counter:
    model(x)
print(mine, counter.get_total_flops(), dynamo)
"""


def test_count_matches_flop_counter_mode_and_leaves_dynamo_unimported():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout.split()
    mine, reference, dynamo = int(out[0]), int(out[1]), out[2]
    conv = 2 * 16 * 8 * 8 * 3 * 3 * 3
    assert mine == reference and mine > conv, (mine, reference)  # the conv (a composite op) is counted
    assert dynamo == "False", "counting FLOPs imported torch._dynamo (~2 s of every PyTorch source step)"
