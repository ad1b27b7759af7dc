"""Trains DigitsCNN on sklearn digits and writes weights plus val/calib data.

Everything is seeded and single-threaded so re-running reproduces
byte-identical `weights.pt`, `val.npz` and `calib.npz`, which mbuild relies on
for cache keys and golden accuracy checks.
"""

import random
from pathlib import Path

import numpy as np
import torch
from model import DigitsCNN
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
VAL_SIZE = 360
CALIB_SIZE = 200
EPOCHS = 30
BATCH_SIZE = 64
TARGET_VAL_ACC = 0.97


def seed_everything(seed: int) -> None:
    """Pins every RNG and kernel choice so runs are bit-for-bit repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def load_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Returns disjoint stratified train/val/calib splits as [N,1,8,8] in [0,1]."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_rest, x_val, y_rest, y_val = train_test_split(
        x, y, test_size=VAL_SIZE, stratify=y, random_state=SEED)
    x_train, x_cal, y_train, y_cal = train_test_split(
        x_rest, y_rest, test_size=CALIB_SIZE, stratify=y_rest, random_state=SEED)
    return {"train": (x_train, y_train), "val": (x_val, y_val), "calib": (x_cal, y_cal)}


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Evaluates in eval mode so BatchNorm/Dropout match the exported graph."""
    model.eval()
    pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((pred == y).mean())


def train(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> nn.Module:
    """Runs Adam for a fixed epoch budget with a seeded shuffle order."""
    x_train, y_train = (torch.from_numpy(a) for a in splits["train"])
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(1, EPOCHS + 1):
        model.train()
        for idx in torch.randperm(len(x_train), generator=gen).split(BATCH_SIZE):
            opt.zero_grad()
            loss_fn(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
        if epoch % 5 == 0:
            print(f"epoch {epoch:3d}  val_acc {accuracy(model, *splits['val']):.4f}")
    return model


def main() -> None:
    """Trains, reports accuracy and writes the artifacts next to this script."""
    seed_everything(SEED)
    splits = load_splits()
    model = train(splits)
    train_acc = accuracy(model, *splits["train"])
    val_acc = accuracy(model, *splits["val"])
    sizes = {k: len(v[1]) for k, v in splits.items()}
    print(f"splits {sizes}")
    print(f"train_acc {train_acc:.4f}  val_acc {val_acc:.4f}")
    if val_acc < TARGET_VAL_ACC:
        raise SystemExit(f"val accuracy {val_acc:.4f} below target {TARGET_VAL_ACC}")
    torch.save(model.state_dict(), HERE / "weights.pt")
    # np.savez stamps zip members with a fixed 1980 date, so bytes are stable.
    np.savez(HERE / "val.npz", x=splits["val"][0], y=splits["val"][1])
    np.savez(HERE / "calib.npz", x=splits["calib"][0])


if __name__ == "__main__":
    main()
