"""Save an MLModel as a reproducible ``.mlpackage``: the same inputs give byte-identical files.

coremltools writes random UUIDs into ``Manifest.json``, the conversion date into the model's
metadata, protobuf maps in hash order, and an ExecuTorch debug map next to the model. After
saving we rewrite those parts deterministically and check the package still opens.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from mbuild.errors import BuildError

MODEL_FILE = Path("Data") / "com.apple.CoreML" / "model.mlmodel"
# UUIDs derived from the item path under a fixed namespace (uuid5), so they are stable and unique per item.
_NAMESPACE = uuid.UUID("6f0c8c1e-5b7a-4b8e-9d0e-6d62756c6400")
_DROP_METADATA = ("com.github.apple.coremltools.conversion_date",)


def save_package(mlmodel, path: Path, metadata: dict) -> list[str]:
    """Save ``mlmodel`` to ``path`` and make it reproducible; returns notes on what was rewritten."""
    try:
        mlmodel.save(str(path))
    except Exception as e:
        raise BuildError(f"coremltools save: {type(e).__name__}: {e}") from e
    notes = _drop_extras(path)
    _rewrite_spec(path / MODEL_FILE, metadata)
    _rewrite_manifest(path / "Manifest.json")
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        os.chmod(f, 0o644)
    verify_package(path)
    return notes


def _drop_extras(path: Path) -> list[str]:
    """Remove files the package manifest does not list (e.g. executorch_debug_handle_mapping.json)."""
    notes = []
    for entry in sorted(path.iterdir()):
        if entry.name in ("Manifest.json", "Data"):
            continue
        if entry.is_file():
            entry.unlink()
            notes.append(f"removed {entry.name} (not part of the Core ML package manifest)")
    return notes


def _rewrite_spec(model_file: Path, metadata: dict) -> None:
    """Set author/version/description and user-defined metadata; serialize with sorted map keys."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(model_file.read_bytes())
    meta = spec.description.metadata
    meta.author = metadata.get("author", "")
    meta.shortDescription = metadata.get("description", "")
    meta.versionString = metadata.get("version", "")
    meta.license = metadata.get("license", "")
    for key in _DROP_METADATA:
        if key in meta.userDefined:
            del meta.userDefined[key]
    for key, value in metadata.get("user_defined", {}).items():
        meta.userDefined[key] = str(value)
    model_file.write_bytes(spec.SerializeToString(deterministic=True))


def _rewrite_manifest(manifest: Path) -> None:
    data = json.loads(manifest.read_text())
    mapping = {}
    for old, item in data.get("itemInfoEntries", {}).items():
        mapping[old] = str(uuid.uuid5(_NAMESPACE, item.get("path", old))).upper()
    data["itemInfoEntries"] = {mapping[k]: v for k, v in sorted(data["itemInfoEntries"].items(),
                                                                key=lambda kv: mapping[kv[0]])}
    if "rootModelIdentifier" in data:
        data["rootModelIdentifier"] = mapping.get(data["rootModelIdentifier"], data["rootModelIdentifier"])
    manifest.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n")


def verify_package(path: Path) -> None:
    """The package opens with coremltools (without compiling it) and its manifest points at the model."""
    import coremltools as ct

    data = json.loads((path / "Manifest.json").read_text())
    root = data["itemInfoEntries"].get(data.get("rootModelIdentifier", ""), {})
    if not (path / "Data" / root.get("path", "-")).is_file():
        raise BuildError(f"coremltools package: Manifest.json of {path.name} does not point at the model file")
    try:
        ct.models.MLModel(str(path), skip_model_load=True)
    except Exception as e:
        raise BuildError(f"coremltools package: {path.name} does not open after saving: {e}") from e
