"""Trains a small Keras CNN on scikit-learn digits (NHWC) and writes model.keras plus val/calib data.

Seeded, single-threaded and with TensorFlow's deterministic ops, so a re-run reproduces the
same weights and accuracy; mbuild's Keras example manifest (manifests/digits-keras.yaml)
builds from these files.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 0
VAL_SIZE = 360
CALIB_SIZE = 200
EPOCHS = 30
TARGET_VAL_ACC = 0.96


def seed_everything(seed: int) -> None:
    """Pins Python, NumPy and TensorFlow RNGs and kernel choice so runs repeat."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def load_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Disjoint stratified train/val/calib splits as [N, 8, 8, 1] (NHWC) in [0, 1]."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    y = digits.target.astype(np.int64)
    x_rest, x_val, y_rest, y_val = train_test_split(x, y, test_size=VAL_SIZE, stratify=y, random_state=SEED)
    x_train, x_cal, y_train, y_cal = train_test_split(
        x_rest, y_rest, test_size=CALIB_SIZE, stratify=y_rest, random_state=SEED)
    return {"train": (x_train, y_train), "val": (x_val, y_val), "calib": (x_cal, y_cal)}


def build_model() -> keras.Model:
    """Conv-BN-ReLU x2, pooling, dense head: the shape of a tiny mobile classifier, channels-last."""
    inputs = keras.Input(shape=(8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_keras_cnn")


def main() -> None:
    """Trains, reports accuracy and writes the artifacts next to this script."""
    seed_everything(SEED)
    splits = load_splits()
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(*splits["train"], epochs=EPOCHS, batch_size=64, shuffle=True, verbose=0)
    val_acc = float(np.mean(model.predict(splits["val"][0], verbose=0).argmax(1) == splits["val"][1]))
    print(f"splits { {k: len(v[1]) for k, v in splits.items()} }  val_acc {val_acc:.4f}")
    if val_acc < TARGET_VAL_ACC:
        raise SystemExit(f"val accuracy {val_acc:.4f} below target {TARGET_VAL_ACC}")
    model.compile()  # drop the optimizer state: the shipped file holds inference weights only
    model.save(HERE / "model.keras")
    np.savez(HERE / "val.npz", x=splits["val"][0], y=splits["val"][1])
    np.savez(HERE / "calib.npz", x=splits["calib"][0])


if __name__ == "__main__":
    main()
