"""Load a manifest: safe YAML, ``extends:``, JSON-Schema check, paths, semantic checks, typed model."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import stat
from pathlib import Path
from typing import Any

from mbuild.errors import Location, ManifestError
from mbuild.manifest._parse_cache import FOLDER as PARSES
from mbuild.manifest._schema import check_manifest_schema, raise_all, suggest
from mbuild.manifest._yaml import Positions, dotted, file_kind, load_yaml
from mbuild.manifest.model import (
    DEFAULT_CAPACITY,
    DataSpec,
    InputSpec,
    Manifest,
    OutputSpec,
    QuantizeConfig,
    RecipeConfig,
    SourceConfig,
    TargetConfig,
)

__all__ = ["load_manifest", "find_root", "Manifest", "RecipeConfig", "TargetConfig", "DataSpec", "InputSpec"]

ROOT_MARKERS = ("dodo.py", "pyproject.toml", ".git")
COMMON_TARGET_KEYS = {"runtime", "recipe", "candidates", "required", "validate", "description", "soc_allow",
                      "soc_deny", "budget"}
MAX_EXTENDS_DEPTH = 8


def find_root(start: Path) -> Path:
    """The project root: the nearest folder above ``start`` holding dodo.py, pyproject.toml or .git."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if any((folder / m).exists() for m in ROOT_MARKERS):
            return folder
    return start


def load_manifest(path: str | Path, root: str | Path | None = None, *, check_targets: bool = True) -> Manifest:
    """Read and check one manifest; raises ManifestError pointing at file:line:col."""
    path = Path(path)
    display = _display(path)
    try:
        root = Path(root).resolve() if root else find_root(path.resolve().parent)
    except (OSError, RuntimeError, ValueError) as e:
        reason = "a symlink loop" if isinstance(e, RuntimeError) else (getattr(e, "strerror", None) or str(e))
        raise ManifestError(f"cannot resolve the manifest's path: {reason}", Location(display, 1, 1)) from None
    loads: list = [0]
    data, positions = _load_with_extends(path, display, root, chain=(), loads=loads)
    snapshot = _pin_snapshot(path, display, loads[1:])
    manifest = _build(path, root, data, positions)
    manifest = dataclasses.replace(manifest, snapshot=snapshot)
    if check_targets:
        from mbuild.targets import check_manifest_targets

        check_manifest_targets(manifest)
    return manifest


SNAPSHOT_PID_ENV = "MBUILD_SNAPSHOT_PID"  # the process that makes the task graph
SNAPSHOTS_ENV = "MBUILD_SNAPSHOTS"  # JSON: manifest path -> digest of the bytes that graph was made from


def begin_build_snapshot() -> None:
    """From now on this process records each manifest it loads; its actions (child processes) must read the same."""
    os.environ[SNAPSHOT_PID_ENV] = str(os.getpid())
    os.environ[SNAPSHOTS_ENV] = "{}"


def _pin_snapshot(path: Path, display: str, digests: list) -> str:
    """Digest of what was read; inside a build, refuse a manifest (or base) that changed since the graph was made."""
    import hashlib
    import json

    snapshot = hashlib.sha256("".join(digests).encode()).hexdigest()[:32]
    graph_pid = os.environ.get(SNAPSHOT_PID_ENV)
    if not graph_pid:
        return snapshot
    key = str(path.resolve())
    try:
        pinned = json.loads(os.environ.get(SNAPSHOTS_ENV) or "{}")
    except ValueError:
        pinned = {}
    if graph_pid == str(os.getpid()):
        pinned[key] = snapshot
        os.environ[SNAPSHOTS_ENV] = json.dumps(pinned)
    elif key in pinned and pinned[key] != snapshot:
        raise ManifestError("the manifest (or a file it extends) changed during the build, after the task graph was "
                            "made from it; nothing was built from the new text - run the build again",
                            Location(display, 1, 1))
    return snapshot


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


MAX_EXTENDS_LOADS = 32


def _load_with_extends(path: Path, display: str, root: Path, chain: tuple, loads: list) -> tuple[dict, Positions]:
    loads[0] += 1
    state = root / ".mbuild"
    data, positions = load_yaml(path, display, loads, cache=state / PARSES if state.is_dir() else None)
    if data is None:
        raise ManifestError("the manifest is empty", Location(display, 1, 1))
    if not isinstance(data, dict):
        raise ManifestError("a manifest is a mapping of keys (mbuild, name, source, ...)", positions.of(()))
    parents = data.pop("extends", None)
    if parents is None:
        return data, positions
    base_list = [parents] if isinstance(parents, str) else parents
    if not isinstance(base_list, list) or not all(isinstance(p, str) for p in base_list):
        raise ManifestError("expected a file name or a list of file names", positions.of(("extends",)), "extends")
    merged: dict = {}
    merged_pos = Positions()
    for i, rel in enumerate(base_list):
        key = ("extends",) if isinstance(parents, str) else ("extends", i)
        base = _resolve_path(rel, path, root, positions.of(key), "extends")
        if base in chain or base == path.resolve():
            raise ManifestError(f"'extends' forms a cycle through {rel}", positions.of(key), "extends")
        if len(chain) >= MAX_EXTENDS_DEPTH:
            raise ManifestError("'extends' is nested too deeply", positions.of(key), "extends")
        if loads[0] >= MAX_EXTENDS_LOADS:
            raise ManifestError(f"'extends' loads more than {MAX_EXTENDS_LOADS} files in all; share fewer bases",
                                positions.of(key), "extends")
        try:
            info = base.stat()
        except (OSError, ValueError):
            raise ManifestError(f"file not found: {rel}", positions.of(key), "extends") from None
        if not stat.S_ISREG(info.st_mode):
            raise ManifestError(f"{rel} is {file_kind(info.st_mode)}, expected a manifest file", positions.of(key),
                                "extends")
        base_data, base_pos = _load_with_extends(base, _display(base), root, chain + (path.resolve(),), loads)
        merged = _merge(merged, base_data)
        merged_pos.update(base_pos)
        merged_pos.keys.update(base_pos.keys)
    merged = _merge(merged, data)
    merged_pos.update(positions)
    merged_pos.keys.update(positions.keys)
    return merged, merged_pos


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    return over


def _resolve_path(value: str, manifest_path: Path, root: Path, loc: Location | None, key: str) -> Path:
    """Resolve relative to the file that wrote it; refuse anything that leaves the project root."""
    origin = Path(loc.file).resolve().parent if loc else manifest_path.resolve().parent
    raw = Path(value)
    try:
        resolved = (origin / raw).resolve() if not raw.is_absolute() else raw.resolve()
    except (OSError, RuntimeError, ValueError) as e:  # symlink loop, NUL, name too long
        reason = "a symlink loop" if isinstance(e, RuntimeError) else (getattr(e, "strerror", None) or str(e))
        raise ManifestError(f"cannot resolve path {value!r}: {reason}", loc, key) from None
    try:
        resolved.relative_to(root)
    except ValueError:
        raise ManifestError(
            f"path {value!r} leaves the project root {root}; keep models and data inside the project",
            loc, key) from None
    return resolved


class _Problems(list):
    """Problems found so far; ``with problems.each():`` records one and carries on with the next item."""

    @contextlib.contextmanager
    def each(self):
        try:
            yield
        except ManifestError as e:
            self.extend(getattr(e, "problems", None) or [e])


def _build(path: Path, root: Path, data: dict, pos: Positions) -> Manifest:
    check_manifest_schema(data, pos, Path(root) / ".mbuild")
    files: list[Path] = []
    problems = _Problems()

    def need_file(value: str, key: tuple, *, directory_ok: bool = False) -> Path:
        loc = pos.of(key)
        p = _resolve_path(value, path, root, loc, dotted(key))
        try:
            info = p.stat()
        except (OSError, ValueError):
            raise ManifestError(f"file not found: {value} (looked in {p.parent})", loc, dotted(key)) from None
        if stat.S_ISDIR(info.st_mode):
            if not directory_ok:
                raise ManifestError(f"{value} is a folder, expected a file", loc, dotted(key))
        elif not stat.S_ISREG(info.st_mode):
            raise ManifestError(f"{value} is {file_kind(info.st_mode)}, expected a regular file", loc, dotted(key))
        files.append(p)
        return p

    source = None
    with problems.each():
        source = _build_source(data["source"], need_file, root, pos.of)
    inputs = {}
    for name, spec in data["inputs"].items():
        rng = spec.get("range")
        with problems.each():
            _check_input(name, spec, pos)
        inputs[name] = InputSpec(
            name=name, shape=tuple(spec["shape"]), dtype=spec.get("dtype", "float32"),
            range=tuple(rng) if rng else None, layout=spec.get("layout", "any"),
            shapes=tuple(tuple(s) for s in spec.get("shapes", ())), image=spec.get("image"))
    outputs = {}
    for name, spec in data["outputs"].items():
        labels = None
        with problems.each():
            labels = need_file(spec["labels"], ("outputs", name, "labels")) if "labels" in spec else None
        outputs[name] = OutputSpec.from_dict(name, spec, labels=labels)
    with problems.each():
        _check_output_declarations(outputs, inputs, pos)
    datasets = {}
    for name, spec in data.get("data", {}).items():
        with problems.each():
            datasets[name] = _build_dataset(name, spec, inputs, pos, need_file)

    recipes = {}
    for name, spec in data.get("recipes", {}).items():
        with problems.each():
            recipes[name] = _build_recipe(name, spec, data.get("data", {}), pos)

    targets = {}
    for name, spec in data["targets"].items():
        with problems.each():
            targets[name] = _build_target(name, spec, data.get("recipes", {}), pos)
    for name, spec in data["targets"].items():
        with problems.each():
            _check_shapes_honoured(name, spec, data["inputs"], pos)

    validate = data.get("validate", {})
    for key_name in validate:
        with problems.each():
            declared = data.get("recipes", {})
            if key_name != "default" and key_name not in declared:
                raise ManifestError(f"{key_name!r} is neither 'default' nor a recipe{suggest(key_name, [*declared, 'default'])}",
                                    pos.of(("validate", key_name), key=True), f"validate.{key_name}")
        with problems.each():
            _check_tolerance_outputs(validate[key_name], ("validate", key_name), outputs, pos)
    for name, spec in data["targets"].items():
        with problems.each():
            _check_tolerance_outputs(spec.get("validate") or {}, ("targets", name, "validate"), outputs, pos)

    select = data.get("select", {})
    order = tuple(select.get("order", ()))
    for i, t in enumerate(order):
        with problems.each():
            if t not in data["targets"]:
                raise ManifestError(f"{t!r} is not a target{suggest(t, data['targets'])}", pos.of(("select", "order", i)),
                                    f"select.order[{i}]")
    fallback = select.get("fallback")
    with problems.each():
        if fallback is not None and fallback not in data["targets"]:
            raise ManifestError(f"{fallback!r} is not a target{suggest(fallback, data['targets'])}",
                                pos.of(("select", "fallback")), "select.fallback")
    raise_all(problems)
    if "validation" not in datasets:
        datasets["validation"] = DataSpec(name="validation", synthetic={"count": 32, "seed": 0})

    capacity = _merge(DEFAULT_CAPACITY, data.get("capacity", {}))
    raw = _relativize(data, path, root, pos)
    return Manifest(
        path=path.resolve(), root=root, name=data["name"], version=data["version"], source=source,
        inputs=inputs, outputs=outputs, data=datasets, recipes=recipes, targets=targets, validate=validate,
        select_order=order, fallback=fallback, capacity=capacity, description=data.get("description", ""),
        author=data.get("author", ""), license=data.get("license", ""), raw=raw, positions=pos,
        input_files=tuple(dict.fromkeys(files)))


MAX_ELEMENTS = 1 << 31  # elements of one input sample: beyond this no runtime allocates it
_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int32": (-(1 << 31), (1 << 31) - 1),
               "int64": (-(1 << 63), (1 << 63) - 1), "bool": (0, 1)}
_CHANNELS = {"RGB": 3, "BGR": 3, "GRAYSCALE": 1}


def _check_input(name: str, spec: dict, pos: Positions) -> None:
    key = ("inputs", name)
    rng = spec.get("range")
    if rng is not None and not rng[0] < rng[1]:
        raise ManifestError(f"range must be [low, high] with low < high, got {rng}", pos.of(key + ("range",)),
                            dotted(key + ("range",)))
    dtype = spec.get("dtype", "float32")
    if rng is not None and dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[dtype]
        if not (lo <= rng[0] and rng[1] <= hi):
            raise ManifestError(f"range {rng} does not fit {dtype} ([{lo}, {hi}])", pos.of(key + ("range",)),
                                dotted(key + ("range",)))
    for where, shape in [(("shape",), spec["shape"])] + [(("shapes", i), s) for i, s in enumerate(spec.get("shapes", ()))]:
        if math.prod(shape) > MAX_ELEMENTS:
            raise ManifestError(f"shape {shape} holds {math.prod(shape)} elements per sample, more than {MAX_ELEMENTS}",
                                pos.of(key + where), dotted(key + where))
    image = spec.get("image")
    if image is not None:
        shape, layout = spec["shape"], spec.get("layout", "any")
        axis = {"NCHW": 1, "NHWC": -1}.get(layout)
        want = _CHANNELS[image.get("color", "RGB")]
        if len(shape) != 4:
            raise ManifestError(f"an image input has 4 axes (NCHW or NHWC), the shape {shape} has {len(shape)}",
                                pos.of(key + ("shape",)), dotted(key + ("shape",)))
        channels = [shape[axis]] if axis is not None else [shape[1], shape[-1]]
        if want not in channels:
            color = image.get("color", "RGB")
            raise ManifestError(f"color {color} has {want} channel(s), the shape {shape} has "
                                f"{' or '.join(map(str, dict.fromkeys(channels)))}"
                                + ("; set image.color: GRAYSCALE" if 1 in channels and want == 3 else ""),
                                pos.of(key + ("image",)), dotted(key + ("image",)))


SHAPES_HONOURED = {"coreml": "enumerated shapes"}  # runtimes that build and accept an input's extra shapes


def _check_shapes_honoured(name: str, spec: dict, inputs: dict, pos: Positions) -> None:
    """Refuse a target whose runtime would silently pin extra input ``shapes:`` to the first one."""
    runtime = spec["runtime"]
    with_shapes = [n for n, i in inputs.items() if i.get("shapes")]
    if with_shapes and runtime not in SHAPES_HONOURED:
        honoured = ", ".join(f"{r} ({how})" for r, how in SHAPES_HONOURED.items())
        raise ManifestError(f"runtime {runtime!r} builds and validates input {with_shapes[0]!r} at its first shape "
                            f"only, so its extra 'shapes' would be ignored; drop 'shapes' or build this target with "
                            f"{honoured}", pos.of(("targets", name, "runtime")), f"targets.{name}.runtime")


def _build_dataset(name: str, spec: dict, inputs: dict, pos: Positions, need_file) -> DataSpec:
    key = ("data", name)
    if ("npz" in spec) == ("synthetic" in spec):
        raise ManifestError("give either 'npz' (real data) or 'synthetic' (seeded random inputs)",
                            pos.of(key), dotted(key))
    mapping = dict(spec.get("inputs") or ({n: n for n in inputs} if "npz" in spec else {}))
    for input_name in mapping:
        if input_name not in inputs:
            raise ManifestError(f"{input_name!r} is not a declared input{suggest(input_name, inputs)}",
                                pos.of(key + ("inputs", input_name), key=True), dotted(key + ("inputs", input_name)))
    if "npz" in spec:
        missing = [n for n in inputs if n not in mapping]
        if missing:
            raise ManifestError(f"no array given for input(s) {', '.join(missing)}; map each input to an npz key",
                                pos.of(key + ("inputs",)), dotted(key + ("inputs",)))
    return DataSpec(
        name=name, npz=need_file(spec["npz"], key + ("npz",)) if "npz" in spec else None,
        inputs=mapping, labels=spec.get("labels"), limit=spec.get("limit"), synthetic=spec.get("synthetic"))


def _build_recipe(name: str, spec: dict, data_sets: dict, pos: Positions) -> RecipeConfig:
    q = spec.get("quantize")
    quant = QuantizeConfig.from_dict(q) if q else None
    if quant:
        qkey = ("recipes", name, "quantize")
        if quant.scheme == "static":
            cal = quant.calibration or ("calibration" if "calibration" in data_sets else None)
            if cal is None:
                raise ManifestError("a static recipe needs calibration data: add 'calibration: <data set>' "
                                    "and declare that data set under 'data'", pos.of(qkey), dotted(qkey))
            if cal not in data_sets:
                # the validation set judges the result: never offered as the calibration set
                hint = suggest(cal, [d for d in data_sets if d != "validation"])
                raise ManifestError(f"{cal!r} is not a data set{hint or '; declare it under data'}",
                                    pos.of(qkey + ("calibration",)), dotted(qkey + ("calibration",)))
            quant = QuantizeConfig.from_dict({**q, "calibration": cal})
        if quant.activations == "float" and quant.scheme == "static":
            raise ManifestError("static quantization quantizes activations; use scheme 'weight_only' for float "
                                "activations", pos.of(qkey + ("activations",)), dotted(qkey + ("activations",)))
        if quant.granularity == "per_block" and not quant.block_size:
            raise ManifestError("per_block granularity needs 'block_size'", pos.of(qkey), dotted(qkey))
    return RecipeConfig(name=name, precision=spec.get("precision", "fp32"), quantize=quant,
                        palettize=spec.get("palettize"), prune=spec.get("prune"),
                        description=spec.get("description", ""))


def _build_target(name: str, spec: dict, recipes: dict, pos: Positions) -> TargetConfig:
    key = ("targets", name)
    recipe = spec["recipe"]
    candidates = tuple(spec.get("candidates", ()))
    if recipe == "auto":
        for i, c in enumerate(candidates):
            if c not in recipes:
                raise ManifestError(f"{c!r} is not a recipe{suggest(c, recipes)}",
                                    pos.of(key + ("candidates", i)), dotted(key + ("candidates", i)))
    elif recipe not in recipes:
        hint = suggest(recipe, recipes) or (f"; recipes: {', '.join(recipes)}" if recipes else "; no recipes are declared")
        raise ManifestError(f"{recipe!r} is not a recipe{hint}", pos.of(key + ("recipe",)), dotted(key + ("recipe",)))
    elif candidates:
        raise ManifestError("'candidates' only applies to 'recipe: auto'", pos.of(key + ("candidates",), key=True),
                            dotted(key + ("candidates",)))
    options = {k: v for k, v in spec.items() if k not in COMMON_TARGET_KEYS}
    return TargetConfig(name=name, runtime=spec["runtime"], recipe=recipe, candidates=candidates,
                        required=spec.get("required", True), validate=dict(spec.get("validate", {})),
                        options=options, description=spec.get("description", ""))


def _check_output_declarations(outputs: dict[str, OutputSpec], inputs: dict[str, InputSpec], pos: Positions) -> None:
    """Cross-field rules of output declarations that the schema cannot say (the model is checked at source time)."""
    for name, out in outputs.items():
        key = ("outputs", name)
        if out.shape is not None and out.axis is not None and not -len(out.shape) <= out.axis < len(out.shape):
            raise ManifestError(f"axis {out.axis} is outside the declared shape {list(out.shape)}",
                                pos.of(key + ("axis",)), dotted(key + ("axis",)))
        for part in out.parts.values():
            pkey = key + ("parts", part.name)
            if part.output is not None:
                if part.output not in outputs:
                    raise ManifestError(f"{part.output!r} is not a declared output{suggest(part.output, outputs)}",
                                        pos.of(pkey + ("output",)), dotted(pkey + ("output",)))
                if part.range is not None:
                    raise ManifestError("give either 'output' (another output holds the part) or 'range' (a slice of "
                                        "this output), not both", pos.of(pkey), dotted(pkey))
            elif part.range is None and part.name == "scores":
                raise ManifestError("say where the scores are: 'range: [start, stop]' along 'axis', or 'output: <name>'",
                                    pos.of(pkey), dotted(pkey))
            if part.range is not None and not part.range[0] < part.range[1]:
                raise ManifestError(f"range must be [start, stop) with start < stop, got {list(part.range)}",
                                    pos.of(pkey + ("range",)), dotted(pkey + ("range",)))
            if part.name == "boxes" and part.range is not None and part.range[1] - part.range[0] != 4:
                raise ManifestError(f"boxes take 4 entries along their axis, the range {list(part.range)} has "
                                    f"{part.range[1] - part.range[0]}", pos.of(pkey + ("range",)), dotted(pkey + ("range",)))
        if out.range is not None and not out.range[0] < out.range[1]:
            raise ManifestError(f"range must be [low, high] with low < high, got {list(out.range)}",
                                pos.of(key + ("range",)), dotted(key + ("range",)))
        if out.state_input is not None:
            skey = key + ("state", "input")
            if out.state_input not in inputs:
                raise ManifestError(f"{out.state_input!r} is not a declared input{suggest(out.state_input, inputs)}",
                                    pos.of(skey), dotted(skey))
            want = inputs[out.state_input].shape
            if out.shape is not None and tuple(out.shape) != tuple(want):
                raise ManifestError(f"a state output feeds input {out.state_input!r} of shape {list(want)}, but it is "
                                    f"declared with shape {list(out.shape)}", pos.of(key + ("shape",)), dotted(key + ("shape",)))
    fed = [o.state_input for o in outputs.values() if o.state_input]
    for twice in {n for n in fed if fed.count(n) > 1}:
        raise ManifestError(f"two state outputs feed the same input {twice!r}", pos.of(("outputs",)), "outputs")


def _check_tolerance_outputs(tolerance: dict, key: tuple, outputs: dict, pos: Positions) -> None:
    for name in (tolerance or {}).get("outputs", {}) or {}:
        if name not in outputs:
            where = key + ("outputs", name)
            raise ManifestError(f"{name!r} is not a declared output{suggest(name, outputs)}", pos.of(where, key=True),
                                dotted(where))


def _build_source(src: dict, need_file, root: Path, pos_of) -> SourceConfig:
    kind, spec = next(iter(src.items()))
    key = ("source", kind)
    if kind == "pytorch":
        target, _, attr = spec["model"].rpartition(":")
        model_path = None
        if target.endswith(".py") or "/" in target:
            if not target.endswith(".py"):
                raise ManifestError(f"{target!r} is not a Python file; write 'path/to/model.py:{attr}'",
                                    pos_of(key + ("model",)), dotted(key + ("model",)))
            model_path = need_file(target, key + ("model",))
        elif not _module_allowed(target, root):
            raise ManifestError(
                f"{target!r} is not a file of this project; name a class or function in a project file "
                f"('path/to/model.py:{attr}'), or list the installed package you trust under [tool.mbuild] "
                "source-modules in pyproject.toml", pos_of(key + ("model",)), dotted(key + ("model",)))
        weights, weights_key, strict = None, None, True
        if isinstance(spec.get("weights"), dict):
            w = spec["weights"]
            weights = need_file(w["file"], key + ("weights", "file"))
            weights_key, strict = w.get("key"), w.get("strict", True)
        elif "weights" in spec:
            weights = need_file(spec["weights"], key + ("weights",))
        return SourceConfig(kind=kind, model=spec["model"], model_path=model_path, callable_name=attr,
                            weights=weights, weights_key=weights_key, weights_strict=strict,
                            kwargs=dict(spec.get("kwargs", {})))
    directory_ok = kind == "tensorflow"
    model_path = need_file(spec["model"], key + ("model",), directory_ok=directory_ok)
    return SourceConfig(kind=kind, model=spec["model"], model_path=model_path,
                        signature=spec.get("signature", "serving_default"))


def _module_allowed(module: str, root: Path) -> bool:
    """True when the project's pyproject.toml lists ``module`` (or a package holding it) in [tool.mbuild] source-modules."""
    return any(module == m or module.startswith(m + ".") for m in project_source_modules(root))


def project_source_modules(root: Path) -> tuple[str, ...]:
    """Installed packages a project lets its manifests name as ``source.pytorch.model`` (none by default)."""
    import tomllib

    path = Path(root) / "pyproject.toml"
    try:
        if not path.is_file() or path.stat().st_size > MAX_PYPROJECT_BYTES:
            return ()
        tool = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {}).get("mbuild", {})
    except (OSError, ValueError):
        return ()
    modules = tool.get("source-modules", []) if isinstance(tool, dict) else []
    return tuple(m for m in modules if isinstance(m, str) and m) if isinstance(modules, list) else ()


MAX_PYPROJECT_BYTES = 1_000_000

_PATH_KEYS = {("source", "pytorch", "weights"), ("source", "pytorch", "weights", "file"), ("source", "onnx", "model"),
              ("source", "tensorflow", "model")}


def _copy_tree(node):
    """A copy of the dicts and lists (what ``_relativize`` edits); the scalars YAML gives are immutable and shared."""
    if isinstance(node, dict):
        return {k: _copy_tree(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy_tree(v) for v in node]
    return node


def _relativize(data: dict, path: Path, root: Path, pos: Positions) -> dict:
    """Copy of the data with every path written relative to the root, so digests do not depend on the checkout."""
    out = _copy_tree(data)

    def fix(keys: tuple, value: str) -> str:
        p = _resolve_path(value, path, root, pos.of(keys), dotted(keys))
        return p.relative_to(root).as_posix()

    for keys in _PATH_KEYS:
        node = out
        for k in keys[:-1]:
            node = node.get(k, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            node[keys[-1]] = fix(keys, node[keys[-1]])
    pt = out["source"].get("pytorch")
    if pt:
        target, _, attr = pt["model"].rpartition(":")
        if target.endswith(".py") or "/" in target:
            pt["model"] = f"{fix(('source', 'pytorch', 'model'), target)}:{attr}"
    for name, spec in out.get("data", {}).items():
        if "npz" in spec:
            spec["npz"] = fix(("data", name, "npz"), spec["npz"])
    for name, spec in out.get("outputs", {}).items():
        if "labels" in spec:
            spec["labels"] = fix(("outputs", name, "labels"), spec["labels"])
    return out
