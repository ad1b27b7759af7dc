"""The shared suite every registered runtime passes: the contract of mbuild/targets/base.py, for each name in
``mbuild.targets.RUNTIMES``, so a runtime added to the table is held to it without a line written here.

Two parts. Contract checks that load no SDK (seconds): what a runtime declares is what the schema and the
recipe vocabulary know, its refusals are clean one-line manifest errors, its import is light, its device
requirements are selection metadata the bundle code accepts. Then one real build with ``doit`` of the trained
digits CNN, a default fp32 target per runtime (one build, ~2-4 minutes): the artifact and its digests, the
runtime's own run against the source model computed here with torch, the lint's shape, the check's verdict and
the bundle's variant entry.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from mbuild.errors import ManifestError
from mbuild.manifest import load_manifest
from mbuild.manifest.model import TargetConfig
from mbuild.recipes import recipe_features
from mbuild.targets import RUNTIMES, check_manifest_targets, get_runtime
from tests.conftest import REPO, make_project, run_doit, run_mbuild

SCHEMA = json.loads((REPO / "schemas" / "manifest.schema.json").read_text())
BUNDLE_SCHEMA = json.loads((REPO / "schemas" / "bundle.schema.json").read_text())
NAMES = list(RUNTIMES)

SOURCES = {  # one model per source kind, as the examples give them (the PyTorch one is what the build uses)
    "pytorch": "pytorch: {model: ../examples/digits/model.py:DigitsCNN, weights: ../examples/digits/weights.pt}",
    "onnx": "onnx: {model: ../examples/digits-onnx/digits_cnn.onnx}",
    "tensorflow": "tensorflow: {model: ../examples/keras/model.keras}",
}
BUILD_SOURCE = "pytorch"
SAMPLES = 24  # validation samples of the build: enough for top-1 and cosine, cheap for every runtime
# What a runtime's run may not do on this host, and the OS it needs (the check must say skipped, never passed).
RUNS_ONLY_ON = {"coreml": "Darwin"}
# Imported by a runtime's step functions only: loading the runtime to validate a manifest must not pull them in.
HEAVY_MODULES = ("numpy", "torch", "torchao", "tensorflow", "keras", "tf_keras", "jax", "coremltools", "executorch",
                 "onnx", "onnxruntime", "onnxslim", "onnx2tf", "ncnn", "pnnx", "tensorflowjs", "ai_edge_litert",
                 "ai_edge_quantizer", "litert_torch", "cv2")
LINT_KINDS = {"static estimate", "analyzer", "measured"}
LINT_VERDICTS = {"clean", "partial", "unsupported"}


def target_keys(name: str) -> dict:
    """The runtime's own target keys in the manifest schema (the source of truth for what a manifest may say)."""
    spec = SCHEMA["$defs"].get(f"{name}_target")
    if spec is None:
        pytest.fail(f"schemas/manifest.schema.json has no $defs.{name}_target: a runtime's target keys belong there")
    return spec.get("properties", {})


def manifest_text(targets: dict, recipes: dict | None = None, source: str = BUILD_SOURCE,
                  limit: int | None = None) -> str:
    """A manifest of the digits CNN in a project made by :func:`make_project` (JSON flow values are YAML)."""
    recipes = recipes or {"fp32": {"precision": "fp32"}}
    limit_key = f", limit: {limit}" if limit else ""
    lines = ["mbuild: 1", "name: contract", "version: 0.1.0", "source:", f"  {SOURCES[source]}",
             "inputs:", "  image: {shape: [1, 1, 8, 8], dtype: float32, range: [0, 1]}",
             "outputs:", "  logits: {kind: classification}", "data:",
             "  calibration: {npz: ../examples/digits/calib.npz, inputs: {image: x}, limit: 16}",
             f"  validation: {{npz: ../examples/digits/val.npz, inputs: {{image: x}}, labels: y{limit_key}}}",
             "recipes:", *(f"  {n}: {json.dumps(r)}" for n, r in recipes.items()),
             "targets:", *(f"  {n}: {json.dumps(t)}" for n, t in targets.items())]
    return "\n".join(lines) + "\n"


def schema_recipes() -> dict[str, dict]:
    """Every recipe shape the schema's enums allow: precision x quantize scheme/weights/activations/granularity,
    exclude: auto, palettization and pruning."""
    defs = SCHEMA["$defs"]
    q = defs["quantize"]["properties"]
    out: dict[str, dict] = {}
    for precision in defs["recipe"]["properties"]["precision"]["enum"]:
        out[f"{precision}"] = {"precision": precision}
        out[f"{precision}-pal4"] = {"precision": precision, "palettize": {"nbits": 4}}
        out[f"{precision}-prune"] = {"precision": precision, "prune": {"sparsity": 0.5}}
        out[f"{precision}-static-auto"] = {"precision": precision, "quantize": {
            "scheme": "static", "exclude": "auto", "calibration": "calibration"}}
        for scheme in q["scheme"]["enum"]:  # only static quantizes activations (the loader refuses the others)
            activations = [a for a in q["activations"]["enum"] if a != "float"] if scheme == "static" else [None]
            for weights in q["weights"]["enum"]:
                for act in activations:
                    for gran in q["granularity"]["enum"]:
                        spec = {"scheme": scheme, "weights": weights, "granularity": gran}
                        if act:
                            spec.update(activations=act, calibration="calibration")
                        if gran == "per_block":
                            spec["block_size"] = 32
                        out[f"{precision}-{scheme}-{weights}-{act}-{gran}"] = {"precision": precision, "quantize": spec}
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A throw-away project with the digits model in each source kind; tests write manifests into it."""
    root = make_project(tmp_path_factory.mktemp("contract"), {}, examples=("digits", "digits-onnx", "keras"))
    shutil.copyfile(REPO / "examples" / "keras" / "model.keras", root / "examples" / "keras" / "model.keras")
    return root


@pytest.fixture(scope="module")
def recipes_manifest(project):
    """Every schema recipe in one manifest (targets checked per test, one at a time)."""
    path = project / "manifests" / "recipes.yaml"
    path.write_text(manifest_text({"t": {"runtime": "onnxruntime", "recipe": "fp32"}}, schema_recipes()))
    return load_manifest(path, check_targets=False)


def known_features(manifest) -> frozenset[str]:
    return frozenset().union(*(recipe_features(r) for r in manifest.recipes.values()))


def with_target(manifest, runtime: str, recipe: str, **options):
    """The manifest with one target ``t`` of ``runtime`` (as load_manifest would type it)."""
    target = TargetConfig(name="t", runtime=runtime, recipe=recipe, options=options)
    return dataclasses.replace(manifest, targets={"t": target})


def validate(project: Path, name: str, text: str) -> subprocess.CompletedProcess:
    (project / "manifests" / name).write_text(text)
    return run_mbuild("validate", f"manifests/{name}", cwd=project)


def assert_clean_refusal(proc: subprocess.CompletedProcess, manifest: str, *needles: str) -> str:
    """Non-zero exit, one located error line (file:line:col), no traceback, and every needle in it."""
    message = proc.stderr + proc.stdout
    assert proc.returncode != 0, message
    assert "Traceback" not in message, message
    assert re.search(rf"{re.escape(manifest)}:\d+:\d+: ", message), message
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"
    return message


# -- what a runtime declares ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_declared_data_is_what_the_schema_and_the_recipes_know(name, recipes_manifest):
    rt = get_runtime(name)
    assert rt.name == name and type(rt).__name__.endswith("Runtime")
    assert name in SCHEMA["$defs"]["target"]["properties"]["runtime"]["enum"], "runtime missing from the schema"
    assert rt.sources and rt.sources <= set(SCHEMA["$defs"]["source"]["properties"]), rt.sources
    unknown = rt.features - known_features(recipes_manifest)
    assert rt.features and not unknown, f"features no recipe can ask for: {sorted(unknown)}"
    assert "fp32" in rt.features, "every runtime builds the plain fp32 model"
    assert rt.platform in BUNDLE_SCHEMA["$defs"]["requirements"]["properties"]["platform"]["enum"]
    assert rt.format and rt.suffix.startswith(".")
    assert set(rt.check_options) <= set(target_keys(name))
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert rt.extra in extras, f"the install hint names extra {rt.extra!r}, which pyproject.toml does not define"
    assert set(rt.versions()) >= set(rt.packages)  # what task digests and bundle.json record


def _example_value(spec: dict):
    """A value of the schema's type for a key (validity beyond the type is parse_options' to judge)."""
    if "default" in spec:
        return spec["default"]
    if "enum" in spec:
        return spec["enum"][0]
    kind = spec.get("type")
    if kind == "array":
        return [spec["items"]["enum"][0]] if "enum" in spec.get("items", {}) else []
    return {"integer": spec.get("minimum", 1), "boolean": True, "string": "17.0", "number": 1.0}[kind]


@pytest.mark.parametrize("name", NAMES)
def test_every_schema_key_is_a_key_parse_options_knows(name):
    rt = get_runtime(name)
    for key, spec in target_keys(name).items():
        target = TargetConfig(name="t", runtime=name, recipe="fp32", options={key: _example_value(spec)})
        try:
            rt.parse_options(target)
        except ValueError as e:  # a value refused for its own reasons is fine; the key must be known
            assert "unknown" not in str(e), f"{key}: {e}"


def _typo(name: str) -> tuple[str, str]:
    """(a misspelt key, the known key it should suggest): the runtime's longest schema key with a letter added."""
    keys = sorted(target_keys(name), key=len, reverse=True)
    return (keys[0] + "s", keys[0]) if keys else ("optionz", "")


@pytest.mark.parametrize("name", NAMES)
def test_unknown_target_key_is_named_with_the_nearest_known_one(name, project):
    typo, known = _typo(name)
    with pytest.raises(ValueError, match=re.escape(repr(typo))) as e:
        get_runtime(name).parse_options(TargetConfig(name="t", runtime=name, recipe="fp32", options={typo: 1}))
    assert not known or f"did you mean {known!r}" in str(e.value)
    proc = validate(project, f"typo-{name}.yaml", manifest_text({"t": {"runtime": name, "recipe": "fp32", typo: 1}}))
    assert_clean_refusal(proc, f"typo-{name}.yaml", f"targets.t.{typo}", *([f"did you mean {known!r}"] if known else []))


@pytest.mark.parametrize("name", NAMES)
def test_every_schema_recipe_is_built_or_refused_with_the_place(name, recipes_manifest):
    """A recipe needing a feature the runtime lacks is refused at validate; none crashes the check."""
    rt = get_runtime(name)
    for rname, recipe in recipes_manifest.recipes.items():
        missing = recipe_features(recipe) - rt.features
        try:
            check_manifest_targets(with_target(recipes_manifest, name, rname))
        except ManifestError as e:
            assert e.key_path.startswith("targets.t") and e.reason, (rname, str(e))
            continue
        assert not missing, f"recipe {rname} needs {sorted(missing)}, which {name} lacks, and was not refused"


def _lacking_recipe(name: str, manifest) -> str | None:
    rt = get_runtime(name)
    return next((n for n, r in manifest.recipes.items() if recipe_features(r) - rt.features), None)


@pytest.mark.parametrize("name", NAMES)
def test_a_recipe_feature_the_runtime_lacks_is_refused_by_mbuild_validate(name, project, recipes_manifest):
    rname = _lacking_recipe(name, recipes_manifest)
    if rname is None:
        pytest.skip(f"{name} offers every recipe feature the schema has")
    recipes = {"fp32": {"precision": "fp32"}, rname: recipes_manifest.raw["recipes"][rname]}
    text = manifest_text({"t": {"runtime": name, "recipe": rname}}, recipes)
    message = assert_clean_refusal(validate(project, f"lacks-{name}.yaml", text), f"lacks-{name}.yaml", "targets.t")
    assert rname in message or name in message, message
    ok = project / "manifests" / f"ok-{name}.yaml"
    ok.write_text(manifest_text({"t": {"runtime": name, "recipe": "fp32"}}))
    load_manifest(ok)  # the same target with fp32 is accepted: the refusal is the recipe's


REFUSED_SOURCES = [(n, k) for n in NAMES for k in SOURCES if k not in get_runtime(n).sources]


@pytest.mark.parametrize(("name", "kind"), REFUSED_SOURCES)
def test_a_source_kind_the_runtime_cannot_take_is_refused_naming_those_that_can(name, kind, project):
    text = manifest_text({"t": {"runtime": name, "recipe": "fp32"}}, source=kind)
    possible = ", ".join(sorted(n for n in NAMES if kind in get_runtime(n).sources))
    assert_clean_refusal(validate(project, f"source-{name}-{kind}.yaml", text), f"source-{name}-{kind}.yaml",
                         "targets.t.runtime", f"cannot be built from {'an' if kind == 'onnx' else 'a'} {kind} source", possible)


IMPORT_PROBE = """\
import json, sys
from mbuild.manifest import load_manifest
from mbuild.bundle.selection import manifest_requirements
from mbuild.targets import get_runtime
m = load_manifest(sys.argv[1])
rt, t = get_runtime(sys.argv[2]), m.targets["t"]
rt.parse_options(t), rt.check_target(m, t, m.recipes["fp32"]), rt.conversion(m, t, m.recipes["fp32"])
rt.requirements(m, t), rt.versions(), rt.check_versions(t), manifest_requirements(m)
print(json.dumps(sorted(set(sys.argv[3:]) & set(sys.modules))))
"""


@pytest.mark.parametrize("name", NAMES)
def test_validating_a_manifest_loads_no_sdk(name, project):
    """dodo.py and ``mbuild validate`` load every runtime of a manifest: its module and its declarations stay light."""
    path = project / "manifests" / f"light-{name}.yaml"
    path.write_text(manifest_text({"t": {"runtime": name, "recipe": "fp32"}}))
    proc = subprocess.run([sys.executable, "-c", IMPORT_PROBE, str(path), name, *HEAVY_MODULES], capture_output=True,
                          text=True, timeout=120, cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [], f"imported while validating: {proc.stdout}"


def _option_variants(name: str) -> list[dict]:
    """The default target and one per value of each enumerated key of the runtime's schema."""
    props = target_keys(name)
    return [{}] + [{key: value} for key, spec in props.items() for value in spec.get("enum", [])]


@pytest.mark.parametrize("name", NAMES)
def test_requirements_are_selection_metadata_the_bundle_accepts(name, recipes_manifest):
    import jsonschema

    from mbuild.bundle.select import check_requirements, device_properties
    from mbuild.bundle.selection import default_order
    from mbuild.devices import load_devices
    from mbuild.devices.capacity import estimate_variant

    rt, devices = get_runtime(name), load_devices()
    checker = jsonschema.Draft202012Validator({"$defs": BUNDLE_SCHEMA["$defs"], "$ref": "#/$defs/requirements"})
    for options in _option_variants(name):
        manifest = with_target(recipes_manifest, name, "fp32", **options)
        try:
            rt.parse_options(manifest.targets["t"])
        except ValueError:
            continue  # a combination the manifest check refuses has no requirements to state
        req = rt.requirements(manifest, manifest.targets["t"])
        problems = [e.message for e in checker.iter_errors(req)]
        assert not problems, (options, req, problems)
        for device in devices:
            assert isinstance(check_requirements(req, device_properties(device)), list)
        variant = {"id": "t", "requirements": req, "flops": 1e6, "size_bytes": 10**6, "precision": "fp32"}
        estimates = estimate_variant(variant, devices)  # the bundle step's capacity estimate
        assert all(e["kind"] == "estimate" for e in estimates.values()), options
        assert default_order([variant]) == ["t"]


# -- one real build of every runtime -----------------------------------------------------------------------

BUILT = [n for n in NAMES if BUILD_SOURCE in get_runtime(n).sources]


@pytest.fixture(scope="session")
def contract_build(tmp_path_factory):
    """The digits CNN built by the real doit, one default fp32 target per runtime (each optional, so one
    runtime's failure is its own test's failure, not the others')."""
    targets = {n: {"runtime": n, "recipe": "fp32", "required": False} for n in BUILT}
    project = make_project(tmp_path_factory.mktemp("contract-build"),
                           {"contract.yaml": manifest_text(targets, limit=SAMPLES)})
    proc = run_doit(project, check=True)
    manifest = load_manifest(project / "manifests" / "contract.yaml")
    return project, manifest, proc.stdout


def _built(contract_build, name: str):
    from mbuild._io import read_json
    from mbuild.layout import layout_for

    if name not in BUILT:
        pytest.fail(f"runtime {name!r} takes no {BUILD_SOURCE} source: give this suite a model for one it takes")
    project, manifest, log = contract_build
    lay = layout_for(manifest)
    record = read_json(lay.variant_json(name))
    assert record.get("status") != "not built", f"{name} did not build: {record.get('reason')}\n{log}"
    return manifest, lay, record


def _source_logits(x):
    """The digits CNN's logits computed here, with torch, from the example's own code and weights."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("contract_digits_model", REPO / "examples" / "digits" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.DigitsCNN()
    model.load_state_dict(torch.load(REPO / "examples" / "digits" / "weights.pt", weights_only=True))
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def validation_samples():
    import numpy as np

    data = np.load(REPO / "examples" / "digits" / "val.npz")
    x = data["x"][:SAMPLES].astype(np.float32)
    return x, _source_logits(x)


@pytest.mark.parametrize("name", NAMES)
def test_artifact_exists_and_its_digests_are_recorded(name, contract_build):
    from mbuild.integrity import artifact_digests

    _, lay, record = _built(contract_build, name)
    rt = get_runtime(name)
    folder = lay.variant_dir(name)
    artifact = folder / record["artifact"]
    assert artifact.exists() and record["size_bytes"] > 0 and artifact.name.endswith(rt.suffix)
    assert (record["runtime"], record["format"]) == (name, rt.format)
    assert record["digests"] and record["digests"] == artifact_digests(folder, [record["artifact"], *record["files"]])
    absent = [p for p in rt.packages if record["versions"].get(p, "not installed") == "not installed"]
    assert not absent, f"packages the build recorded no version of (misnamed distributions?): {absent}"


@pytest.mark.parametrize("name", NAMES)
def test_run_agrees_with_the_source_model_computed_here(name, contract_build, validation_samples):
    import numpy as np

    from mbuild.steps import make_context

    manifest, lay, record = _built(contract_build, name)
    rt = get_runtime(name)
    x, expected = validation_samples
    ctx = make_context(manifest, name, lay.variant_dir(name))
    result = rt.run(ctx, lay.variant_dir(name) / record["artifact"], {"image": x[:, None]})
    assert result.runtime
    if RUNS_ONLY_ON.get(name, platform.system()) != platform.system():
        assert result.outputs is None and result.skipped_reason, "a run that cannot happen here must say why"
        return
    got = np.asarray(result.outputs["logits"], dtype=np.float64).reshape(len(x), -1)
    cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() > 0.999, cosine.min()
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert len(result.latency_ms) >= len(x) - 1 and min(result.latency_ms) > 0


@pytest.mark.parametrize("name", NAMES)
def test_lint_returns_results_of_the_declared_shape(name, contract_build):
    from mbuild.steps import make_context
    from mbuild.targets.base import LintResult

    manifest, lay, record = _built(contract_build, name)
    ctx = make_context(manifest, name, lay.variant_dir(name))
    lints = get_runtime(name).lint(ctx, lay.variant_dir(name) / record["artifact"])
    assert isinstance(lints, list) and all(isinstance(lint, LintResult) for lint in lints)
    for lint in lints:
        assert lint.name and lint.kind in LINT_KINDS and lint.verdict in LINT_VERDICTS, lint
        assert lint.coverage is None or 0 <= lint.coverage <= 1
        assert isinstance(lint.ops_total, int) and lint.ops_total >= 0
        assert all({"op", "reason"} <= set(o) for o in lint.offenders), lint.offenders
        json.dumps(lint.to_dict())  # recorded in variant.json as it is
    assert [lint.name for lint in lints] == [entry["name"] for entry in record["lint"]]


@pytest.mark.parametrize("name", NAMES)
def test_check_verdict_is_passed_or_skipped_with_the_reason(name, contract_build):
    from mbuild._io import read_json

    _, lay, _ = _built(contract_build, name)
    validation = read_json(lay.report_json(name))["validation"]
    if RUNS_ONLY_ON.get(name, platform.system()) != platform.system():
        assert validation["status"] == "skipped" and RUNS_ONLY_ON[name].replace("Darwin", "macOS") in validation["reason"]
        return
    assert validation["status"] == "passed", validation.get("failures")
    assert validation["metrics"]["logits"]["top1_agreement"] == 1.0
    assert validation["data"]["samples"] == SAMPLES


@pytest.fixture(scope="module")
def bundle_json(contract_build):
    project, manifest, _ = contract_build
    with zipfile.ZipFile(project / "dist" / f"{manifest.name}-{manifest.version}.mbundle") as zf:
        return json.loads(zf.read("bundle.json"))


@pytest.mark.parametrize("name", NAMES)
def test_bundle_entry_carries_the_runtimes_requirements(name, contract_build, bundle_json):
    from mbuild._io import read_json

    manifest, lay, record = _built(contract_build, name)
    (entry,) = [v for v in bundle_json["variants"] if v["id"] == name]
    stated = get_runtime(name).requirements(manifest, manifest.targets[name])
    assert entry["requirements"].items() >= stated.items()
    assert set(entry["requirements"]) - set(stated) <= {"ram_mb_min"}  # the bundle's own, from the built size
    assert (entry["runtime"], entry["format"]) == (name, get_runtime(name).format)
    assert entry["validation"]["status"] == read_json(lay.report_json(name))["validation"]["status"]
    assert name in bundle_json["selection"]["order"]


def test_the_bundle_of_every_runtime_verifies_and_selects(contract_build):
    project, manifest, _ = contract_build
    bundle = f"dist/{manifest.name}-{manifest.version}.mbundle"
    for args in (("verify", bundle), ("select", bundle, "--device", "iphone-12"),
                 ("select", bundle, "--device", "pixel-8"), ("estimate", "iphone-12", "--bundle", bundle)):
        proc = run_mbuild(*args, cwd=project)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (args, proc.stderr + proc.stdout)
