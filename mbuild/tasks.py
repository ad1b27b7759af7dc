"""Manifests -> doit task dicts: ``source:``, ``convert:``, ``variant:``, ``check:``, ``bundle:``.

Loading this module (and so ``dodo.py``) imports no heavy framework: every action is
:func:`mbuild.task_action.run_task_step`, which runs the step in a warm worker's child. Each task depends on the digest of the
part of the manifest it uses (doit's ``config_changed``), its input files and the
versions of the converters it calls - never on the whole manifest file.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mbuild import __version__
from mbuild._io import compact_json, dist_versions, files_of
from mbuild._state import IntactOutputs, clean_paths
from mbuild.conversions import conversions, conversions_of, recipe_names
from mbuild.errors import ManifestError, MbuildError
from mbuild.layout import layout_for
from mbuild.manifest import load_manifest
from mbuild.manifest.model import Manifest
from mbuild.progress import BuildReporter
from mbuild.workers.families import family_of

DOIT_CONFIG = {
    "dep_file": ".mbuild/doit.sqlite",
    "backend": "sqlite3",
    "continue": True,
    "verbosity": 2,
    "reporter": BuildReporter,
    "action_string_formatting": "new",
    # release: needs a decision (and maybe a key), so a plain `doit` never runs it; name it: `doit release`
    "default_tasks": ["source", "convert", "variant", "check", "bundle", "manifest"],
}


def _code_digest() -> str:
    """Digest of mbuild's own code and data: a new mbuild rebuilds what it built (cached per process)."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        import hashlib

        h = hashlib.sha256()
        package = str(Path(__file__).resolve().parent)
        files = []
        for folder, dirs, names in os.walk(package):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            rel_folder = os.path.relpath(folder, package).replace(os.sep, "/")
            files += [(n if rel_folder == "." else f"{rel_folder}/{n}", os.path.join(folder, n)) for n in names
                      if n.endswith((".py", ".json", ".yaml"))]
        for rel, full in sorted(files):
            if rel not in _NOT_BUILD_CODE and os.path.isfile(full):
                with open(full, "rb") as fh:
                    h.update(rel.encode() + b"\0" + fh.read())
        _CODE_DIGEST = h.hexdigest()[:16]
    return _CODE_DIGEST


_CODE_DIGEST: str | None = None
# Modules that read or ship bundles but take no part in building them: editing them rebuilds nothing.
_NOT_BUILD_CODE = {"cli.py", "release.py", "_lock.py", "bundle/report.py", "bundle/sign.py", "bundle/diff.py",
                   "bundle/inspect.py", "bundle/exports.py", "bundle/__init__.py",
                   *(f"cache/{n}.py" for n in ("__init__", "cli", "config", "hook", "host_check", "keys", "maintenance",
                                               "shard", "store"))}  # the shared cache moves outputs, never makes them


def _config(obj) -> "object":
    """doit's uptodate check on the task's configuration and mbuild's code (compact JSON: 68 of them per no-op)."""
    import hashlib

    from doit.tools import config_changed

    return config_changed(hashlib.sha256(compact_json({"config": obj, "code": _code_digest()}).encode()).hexdigest())


def _cmd(step: str, manifest: Manifest, target: str | None = None, runtime: str | None = None) -> tuple:
    """The task's python-action: the step, run in a child of its family's warm worker."""
    from mbuild.task_action import run_task_step

    name = f"{step}:{manifest.name}" + (f"/{target}" if target else "")
    family = family_of(step, runtime, manifest.source.kind)
    return (run_task_step, [name, step, str(manifest.path), target, family, str(manifest.root)])


def used_datasets(m: Manifest) -> list[str]:
    """The data sets the source step writes: validation and every calibration set a recipe names.

    The same rule as ``mbuild.sources.build.used_datasets``, kept here because that module imports
    numpy, which loading dodo.py must not (tests/e2e/test_task_graph.py checks both agree).
    """
    names = ["validation"]
    for recipe in m.recipes.values():
        q = recipe.quantize
        if q and q.calibration and q.calibration not in names:
            names.append(q.calibration)
    return names


def source_task(m: Manifest) -> dict:
    lay = layout_for(m)
    sets = used_datasets(m)
    deps = {"source": m.part("source", "inputs", "outputs"), "data": {s: m.raw.get("data", {}).get(s) for s in sets},
            "mbuild": __version__, "versions": dist_versions(_SOURCE_DISTS[m.source.kind])}
    return {
        "name": m.name,
        "doc": f"reference outputs, data and canonical ONNX for {m.name}",
        "actions": [_cmd("source", m)],
        "file_dep": _rel(m, _files_in(m.input_files)),
        "targets": _rel(m, [lay.source_json, lay.source_dir / "model.onnx", lay.source_dir / "reference.npz"]),
        "uptodate": [_config(deps), IntactOutputs(*_rel(m, [lay.source_dir]))],
        "clean": [clean_paths(*_rel(m, [lay.source_dir]))],
    }


_SOURCE_DISTS = {"pytorch": ("torch", "onnx", "onnxruntime", "onnxslim", "onnx-tool"),
                 "onnx": ("onnx", "onnxruntime", "onnxslim", "onnx-tool"),
                 "tensorflow": ("tensorflow", "tf2onnx", "onnx", "onnxruntime")}


def _rel(m: Manifest, paths) -> list[str]:
    """Paths relative to the project root (doit runs there), so a moved checkout stays up to date."""
    root = str(m.root).rstrip(os.sep) + os.sep
    return [str(p)[len(root):] if str(p).startswith(root) else os.path.relpath(p, m.root) for p in paths]


def _files_in(paths) -> list[Path]:
    """Input files as doit file_deps (a SavedModel folder counts as its files)."""
    return [f for p in paths for f in files_of(p)]


def _recipe_part(m: Manifest, target) -> dict:
    return {n: m.raw.get("recipes", {}).get(n) for n in recipe_names(m, target)}


def _searches_exclusions(m: Manifest, target) -> bool:
    """'exclude: auto' checks candidates while building, so the variant depends on the tolerance too."""
    return any((q := m.recipes[n].quantize) is not None and q.exclude == "auto" for n in recipe_names(m, target))


def convert_task(m: Manifest, path: str, runtime, conversion) -> dict:
    """The base conversion its runtime's variants share: it depends on its own settings, never on a recipe's."""
    lay = layout_for(m)
    deps = {"conversion": conversion.config, "source": m.part("source", "inputs", "outputs"), "mbuild": __version__,
            "versions": runtime.versions()}
    return {
        "name": f"{m.name}/{path}",
        "doc": f"{runtime.name} base conversion {path}, shared by its variants",
        "actions": [_cmd("convert", m, path, runtime.name)],
        "file_dep": _rel(m, [lay.source_json, lay.source_dir / "model.onnx", lay.source_dir / "reference.npz"]),
        "targets": _rel(m, [lay.convert_json(path)]),
        "uptodate": [_config(deps)],
        "clean": True,
    }


def variant_task(m: Manifest, name: str) -> dict:
    from mbuild.targets import get_runtime

    lay = layout_for(m)
    target = m.targets[name]
    runtime = get_runtime(target.runtime)
    raw = m.raw["targets"][name]
    deps = {"target": {k: v for k, v in raw.items() if k not in runtime.check_options}, "recipes": _recipe_part(m, target),
            "io": m.part("name", "inputs", "outputs"),  # release metadata (version, description...) is the bundle's
            "mbuild": __version__, "versions": runtime.versions()}
    if target.recipe == "auto" or _searches_exclusions(m, target):
        from mbuild.recipes import tolerance_inputs

        deps["validate"] = tolerance_inputs(m, target, recipe_names(m, target))
    return {
        "name": f"{m.name}/{name}",
        "doc": f"{target.runtime} variant for target {name}",
        "actions": [_cmd("variant", m, name, target.runtime)],
        "file_dep": _rel(m, [lay.source_json, lay.source_dir / "model.onnx"]
                         + [lay.convert_json(p) for p in conversions_of(m, target)]),
        "targets": _rel(m, [lay.variant_json(name)]),
        "uptodate": [_config(deps), _artifacts_intact(m, name), IntactOutputs(*_rel(m, [lay.variant_dir(name)]))],
        "clean": [clean_paths(*_rel(m, [lay.variant_dir(name)]))],
    }


def _artifacts_intact(m: Manifest, name: str):
    """Check the cached artifact against variant.json: a corrupted file rebuilds the variant (see mbuild.integrity)."""
    from mbuild.integrity import ArtifactsIntact

    return ArtifactsIntact(_rel(m, [layout_for(m).variant_json(name)])[0])


def check_task(m: Manifest, name: str) -> dict:
    from mbuild.targets import get_runtime

    lay = layout_for(m)
    target = m.targets[name]
    from mbuild.recipes import tolerance_inputs

    runtime = get_runtime(target.runtime)
    raw = m.raw["targets"].get(name) or {}
    deps = {"tolerance": tolerance_inputs(m, target, recipe_names(m, target)), "outputs": m.raw["outputs"],
            "mbuild": __version__, "versions": runtime.versions(), "budget": [m.raw.get("budget"), raw.get("budget")]}
    options = {k: raw[k] for k in runtime.check_options if k in raw}
    if options:  # absent for most targets: their digest stays what it was
        deps["check_options"] = {"options": options, "versions": runtime.check_versions(target)}
    return {
        "name": f"{m.name}/{name}",
        "doc": f"validate target {name} against the reference",
        "actions": [_cmd("check", m, name, target.runtime)],
        "file_dep": _rel(m, [lay.variant_json(name), lay.source_dir / "reference.npz"]),
        "targets": _rel(m, [lay.report_json(name)]),
        "uptodate": [_config(deps), IntactOutputs(*_rel(m, [lay.report_json(name)]))],
        "clean": [clean_paths(*_rel(m, [lay.target_dir(name)]))],
    }


def bundle_task(m: Manifest) -> dict:
    lay = layout_for(m)
    deps = {"bundle": m.part("name", "version", "description", "author", "license", "select", "capacity", "inputs",
                             "outputs"), "required": {n: t.required for n, t in m.targets.items()}, "mbuild": __version__}
    file_dep = [lay.source_json]
    for name in m.targets:
        file_dep += [lay.variant_json(name), lay.report_json(name)]
    return {
        "name": m.name,
        "doc": f"package dist/{m.bundle_id}.mbundle",
        "actions": [_cmd("bundle", m)],
        "file_dep": _rel(m, file_dep),
        "targets": _rel(m, [lay.bundle_path]),
        # no IntactOutputs here: 'mbuild release' signs the dist bundle in place, and release itself checks a
        # dist bundle against the build's record (mbuild/release.py); a deleted bundle still reruns this task
        "uptodate": [_config(deps)],
        "clean": [clean_paths(*_rel(m, [lay.bundle_path, lay.dist_dir / f"{m.bundle_id}.report.json",
                                        lay.dist_dir / f"{m.bundle_id}.report.html"]))],
    }


def release_task(m: Manifest, key: str | None = None) -> dict:
    """Verify, sign (key from ``doit release key=PEM`` or MBUILD_SIGNING_KEY) and record the bundle as a release."""
    argv = [sys.executable, "-m", "mbuild.release", str(m.path)] + (["--key", key] if key else [])
    return {
        "name": m.name,
        "doc": f"release dist/{m.bundle_id}.mbundle: verify, sign, report.html, refuse a changed version",
        "actions": [argv],
        "task_dep": [f"bundle:{m.name}"],
        "uptodate": [False],
        "verbosity": 2,
    }


@dataclass
class Project:
    """The manifests found under a project root, and those that failed to load."""

    root: Path
    manifests: list[Manifest] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def tasks(self, kind: str, key: str | None = None):
        for m in self.manifests:
            if kind == "source":
                yield source_task(m)
            elif kind == "convert":
                for path, (runtime, conversion, _, _) in conversions(m).items():
                    yield convert_task(m, path, runtime, conversion)
            elif kind == "bundle":
                yield bundle_task(m)
            elif kind == "release":
                yield release_task(m, key)
            else:
                for name in m.targets:
                    yield variant_task(m, name) if kind == "variant" else check_task(m, name)

    def build_order(self) -> list[str]:
        """The tasks in the order a plain ``doit`` runs them (its ``default_tasks``).

        Per model: its source, then each runtime's conversions, variants and checks, runtime by runtime,
        then its bundle. Runtimes whose worker needs no torch come first: that worker warms while the
        build's zygote imports torch, so on one core their steps run while the other core imports the
        next runtime's SDKs, instead of both waiting for coremltools or litert-torch.
        """
        from mbuild.workers.families import forks_from_zygote

        order: list[str] = []
        for m in self.manifests:
            runtimes = list(dict.fromkeys(t.runtime for t in m.targets.values()))
            runtimes.sort(key=lambda rt: forks_from_zygote(family_of("variant", rt, m.source.kind)))
            converts = conversions(m)
            order.append(f"source:{m.name}")
            for rt in runtimes:
                order += [f"convert:{m.name}/{path}" for path, (runtime, *_) in converts.items() if runtime.name == rt]
                order += [f"variant:{m.name}/{name}" for name, t in m.targets.items() if t.runtime == rt]
                order += [f"check:{m.name}/{name}" for name, t in m.targets.items() if t.runtime == rt]
            order.append(f"bundle:{m.name}")
        return order

    def error_tasks(self):
        from doit.exceptions import TaskFailed

        for path, message in self.errors:
            yield {"name": path, "doc": "manifest that failed to load",
                   "actions": [lambda message=message: TaskFailed(message)], "uptodate": [False]}


def discover_manifests(root: Path, selection: str | None = None) -> list[Path]:
    """``manifests/*.yaml`` under the root, or the comma-separated paths given (doit var / MBUILD_MANIFESTS)."""
    selection = selection or os.environ.get("MBUILD_MANIFESTS")
    if selection:
        return [Path(p) if Path(p).is_absolute() else root / p for p in selection.split(",") if p]
    folder = root / "manifests"
    return sorted(list(folder.glob("*.yaml")) + list(folder.glob("*.yml")))


def load_project(root: Path, selection: str | None = None) -> Project:
    project = Project(root=root.resolve())
    names: dict[str, Path] = {}
    for path in discover_manifests(project.root, selection):
        try:
            m = load_manifest(path, root=project.root)
        except MbuildError as e:
            project.errors.append((os.path.relpath(path, project.root), str(e)))
            print(f"error: {e}", file=sys.stderr)
            continue
        if m.name in names:
            e = ManifestError(f"name {m.name!r} is also used by {os.path.relpath(names[m.name], project.root)}; "
                              "bundle names must be unique", m.positions.of(("name",)), "name")
            project.errors.append((os.path.relpath(path, project.root), str(e)))
            print(f"error: {e}", file=sys.stderr)
            continue
        names[m.name] = path
        project.manifests.append(m)
    return project
