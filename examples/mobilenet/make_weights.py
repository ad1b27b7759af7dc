"""Creates deterministic MobileNetV2Small weights so mbuild has a reproducible large model.

There is no training here: weights come from a seeded init, and BatchNorm
running statistics are calibrated on seeded random images so activations in
eval mode stay in a sane range (quantization and parity checks need that).
"""

from pathlib import Path

import torch
from model import MobileNetV2Small
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
CALIB_BATCHES = 4
BATCH_SIZE = 16


def init_weights(model: nn.Module) -> None:
    """Applies the reference MobileNetV2 init so the seeded weights look realistic."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def calibrate_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Sets BN running stats to exact averages over seeded random batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # Cumulative average instead of an EMA.
    model.train()
    for _ in range(CALIB_BATCHES):
        model(torch.randn(BATCH_SIZE, 3, 224, 224, generator=gen))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


def main() -> None:
    """Builds, initializes, calibrates and saves the state_dict next to this script."""
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = MobileNetV2Small()
    init_weights(model)
    calibrate_bn(model, torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)))
    params = sum(p.numel() for p in model.parameters())
    out = HERE / "weights.pt"
    torch.save(model.state_dict(), out)
    print(f"params {params}  logits mean {logits.mean():.4f} std {logits.std():.4f}")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
