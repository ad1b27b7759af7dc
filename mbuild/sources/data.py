"""Data sets on disk: manifest npz files (or synthetic inputs) -> arrays of shape [samples, *declared_shape].

The source task writes ``data/<set>.npz`` with keys ``input:<name>`` (and ``labels``) and
``reference.npz`` with keys ``output:<name>``; runtimes read them through these helpers.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mbuild.errors import ManifestError

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import DataSpec, InputSpec, Manifest

_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32,
           "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


def prepare_dataset(manifest: "Manifest", spec: "DataSpec") -> tuple[dict[str, np.ndarray], np.ndarray | None, dict]:
    """Arrays per input as [samples, *shape], labels (or None) and a description for reports."""
    if spec.is_synthetic:
        return _synthetic(manifest, spec)
    key = ("data", spec.name)
    loc = manifest.positions.of(key + ("npz",))
    check_npz(manifest, spec)
    try:
        npz = np.load(spec.npz, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ManifestError(f"cannot read {manifest.rel(spec.npz)} as .npz: {e}", loc, f"data.{spec.name}.npz") from None
    with npz:
        arrays = {}
        for input_name, array_key in spec.inputs.items():
            if array_key not in npz.files:
                raise ManifestError(
                    f"{manifest.rel(spec.npz)} has no array {array_key!r} (it has: {', '.join(npz.files)})",
                    manifest.positions.of(key + ("inputs", input_name)), f"data.{spec.name}.inputs.{input_name}")
            arrays[input_name] = _as_samples(npz[array_key], manifest.inputs[input_name], manifest, key, input_name)
        labels = None
        if spec.labels:
            if spec.labels not in npz.files:
                raise ManifestError(f"{manifest.rel(spec.npz)} has no array {spec.labels!r} (it has: {', '.join(npz.files)})",
                                    manifest.positions.of(key + ("labels",)), f"data.{spec.name}.labels")
            labels = np.asarray(npz[spec.labels]).reshape(-1).astype(np.int64)
    count = min(len(a) for a in arrays.values())
    if spec.limit:
        count = min(count, spec.limit)
    arrays = {k: v[:count] for k, v in arrays.items()}
    if labels is not None:
        per_sample = int(np.prod(next(iter(manifest.inputs.values())).shape[:1])) or 1
        labels = labels[: count * per_sample]
    info = {"kind": "real", "file": manifest.rel(spec.npz), "samples": count, "labels": labels is not None}
    return arrays, labels, info


MAX_NPZ_BYTES = 8 * 1024**3  # one data set, uncompressed: beyond it the build would not fit in memory anyway


def check_npz(manifest: "Manifest", spec: "DataSpec") -> None:
    """A regular .npz whose arrays are all there and whose uncompressed size is known to fit, before any is read."""
    import os
    import stat
    import zipfile

    key = ("data", spec.name)
    loc = manifest.positions.of(key + ("npz",))
    rel = manifest.rel(spec.npz)
    try:
        mode = os.stat(spec.npz).st_mode
        if not stat.S_ISREG(mode):
            raise ManifestError(f"{rel} is not a regular file; name an .npz file", loc, f"data.{spec.name}.npz")
        with zipfile.ZipFile(spec.npz) as zf:
            members = {i.filename.removesuffix(".npy"): i.file_size for i in zf.infolist()}
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise ManifestError(f"cannot read {rel} as .npz: {e}", loc, f"data.{spec.name}.npz") from None
    total = sum(members.values())
    if total > MAX_NPZ_BYTES:
        raise ManifestError(f"{rel} holds {total} bytes uncompressed, more than {MAX_NPZ_BYTES}", loc,
                            f"data.{spec.name}.npz")
    from mbuild.manifest._schema import suggest

    for input_name, array_key in spec.inputs.items():
        if array_key not in members:
            raise ManifestError(f"{rel} has no array {array_key!r}{suggest(array_key, members)} "
                                f"(it has: {', '.join(members)})", manifest.positions.of(key + ("inputs", input_name)),
                                f"data.{spec.name}.inputs.{input_name}")
    if spec.labels and spec.labels not in members:
        raise ManifestError(f"{rel} has no array {spec.labels!r}{suggest(spec.labels, members)} (it has: "
                            f"{', '.join(members)})", manifest.positions.of(key + ("labels",)), f"data.{spec.name}.labels")


def _as_samples(array: np.ndarray, inp: "InputSpec", manifest, key, input_name) -> np.ndarray:
    """Split an array into samples of the declared shape (stacked samples, or batches along axis 0)."""
    shape = tuple(inp.shape)
    arr = np.asarray(array)
    if arr.shape[1:] == shape:
        samples = arr
    elif shape and arr.ndim == len(shape) and arr.shape[1:] == shape[1:] and arr.shape[0] % shape[0] == 0:
        samples = arr.reshape((-1, *shape))
    else:
        raise ManifestError(
            f"array shape {list(arr.shape)} does not hold samples of the declared shape {list(shape)} for input {input_name!r}",
            manifest.positions.of(key + ("inputs", input_name)) or manifest.positions.of(key), f"data.{key[1]}")
    return samples.astype(_DTYPES[inp.dtype], copy=False)


def _synthetic(manifest: "Manifest", spec: "DataSpec"):
    opts = spec.synthetic or {}
    count, seed = int(opts.get("count", 32)), int(opts.get("seed", 0))
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, inp in manifest.inputs.items():
        lo, hi = inp.range or ((0, 1) if inp.dtype.startswith("float") else (0, 10))
        shape = (count, *inp.shape)
        if inp.dtype.startswith("float"):
            arrays[name] = rng.uniform(lo, hi, size=shape).astype(_DTYPES[inp.dtype])
        elif inp.dtype == "bool":
            arrays[name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            arrays[name] = rng.integers(int(lo), int(hi), size=shape, endpoint=True).astype(_DTYPES[inp.dtype])
    info = {"kind": "synthetic", "samples": count, "seed": seed, "labels": False}
    return arrays, None, info


def write_dataset(path: Path, inputs: dict[str, np.ndarray], labels: np.ndarray | None = None) -> None:
    from mbuild._io import atomic_path

    arrays = {f"input:{k}": v for k, v in inputs.items()}
    if labels is not None:
        arrays["labels"] = labels
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def read_inputs(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k.split(":", 1)[1]: npz[k] for k in npz.files if k.startswith("input:")}


def read_labels(path: Path) -> np.ndarray | None:
    with np.load(path, allow_pickle=False) as npz:
        return npz["labels"] if "labels" in npz.files else None


def write_outputs(path: Path, outputs: dict[str, np.ndarray], streams: dict[str, np.ndarray] | None = None) -> None:
    """Reference outputs per sample (``output:<name>``) and over a stream of steps (``stream:<name>``)."""
    from mbuild._io import atomic_path

    arrays = {f"output:{k}": v for k, v in outputs.items()}
    arrays.update({f"stream:{k}": v for k, v in (streams or {}).items()})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def read_outputs(path: Path, prefix: str = "output") -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k.split(":", 1)[1]: npz[k] for k in npz.files if k.startswith(prefix + ":")}
