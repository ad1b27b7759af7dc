"""The doit task graph: no-op rebuilds, per-target digests, failures that keep the rest."""
from __future__ import annotations

import json
import shutil

from tests.conftest import DIGITS_CPU, REPO, executed_tasks, make_project, run_doit


def test_second_run_executes_nothing(digits_cpu_project):
    proc = run_doit(digits_cpu_project, check=True)
    assert executed_tasks(proc.stdout) == set(), proc.stdout
    assert "-- bundle:digits-cnn" in proc.stdout


def test_dodo_imports_no_heavy_framework(digits_cpu_project):
    import subprocess
    import sys

    code = ("import sys, runpy; runpy.run_path('dodo.py'); "
            "print(sorted(m for m in ('torch', 'tensorflow', 'coremltools', 'onnxruntime', 'litert_torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=digits_cpu_project, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_recipe_edit_rebuilds_only_that_target(tmp_path, digits_cpu_project):
    project = tmp_path / "p"
    shutil.copytree(digits_cpu_project, project)
    manifest = project / "manifests" / "digits.yaml"
    manifest.write_text(manifest.read_text().replace("cpu-int8: {runtime: onnxruntime, recipe: int8}",
                                                     "cpu-int8: {runtime: onnxruntime, recipe: fp16}"))
    proc = run_doit(project, check=True)
    assert executed_tasks(proc.stdout) == {"variant:digits-cnn/cpu-int8", "check:digits-cnn/cpu-int8",
                                           "bundle:digits-cnn"}, proc.stdout


def test_failing_target_keeps_the_others_and_blocks_the_bundle(tmp_path):
    text = DIGITS_CPU + "  fp32: {cosine_min: 1.0, max_abs_max: 0.0}\n"
    project = make_project(tmp_path, {"digits.yaml": text})
    proc = run_doit(project)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "logits: max_abs = " in out and "above the maximum 0 (max_abs_max)" in out, out
    assert "Traceback" not in out
    # the other target was built and checked; its files are still there
    report = json.loads((project / "build/digits-cnn/targets/cpu-int8/report.json").read_text())
    assert report["validation"]["status"] == "passed"
    failed = json.loads((project / "build/digits-cnn/targets/cpu-fp32/report.json").read_text())
    assert failed["validation"]["status"] == "failed"
    assert failed["validation"]["failures"][0]["metric"] == "max_abs"
    assert not (project / "dist/digits-cnn-1.0.0.mbundle").exists()


def test_editing_one_recipes_tolerance_reruns_only_the_checks_of_that_recipe(tmp_path, digits_cpu_project):
    project = tmp_path / "p"
    shutil.copytree(digits_cpu_project, project)
    manifest = project / "manifests" / "digits.yaml"
    text = manifest.read_text()
    assert "  int8: {cosine_min: 0.99}\n" in text
    manifest.write_text(text.replace("  int8: {cosine_min: 0.99}\n",
                                     "  int8: {cosine_min: 0.985, outputs: {logits: {top1_agreement_min: 0.97}}}\n"))
    proc = run_doit(project, check=True)
    assert executed_tasks(proc.stdout) == {"check:digits-cnn/cpu-int8", "bundle:digits-cnn"}, proc.stdout
    report = json.loads((project / "build/digits-cnn/targets/cpu-int8/report.json").read_text())
    assert report["validation"]["tolerance"]["logits"]["top1_agreement_min"] == 0.97


def test_release_metadata_rebuilds_only_the_bundle(tmp_path, digits_cpu_project):
    """description, author, license and version are the bundle's: editing them re-packages, it rebuilds nothing."""
    project = tmp_path / "p"
    shutil.copytree(digits_cpu_project, project)
    manifest = project / "manifests" / "digits.yaml"
    text = manifest.read_text()
    manifest.write_text(text.replace("version: 1.0.0\n", "version: 1.0.1\ndescription: a new description\n"
                                                          "author: release team\nlicense: MIT\n"))
    proc = run_doit(project, check=True)
    assert executed_tasks(proc.stdout) == {"bundle:digits-cnn"}, proc.stdout
    from mbuild.bundle.verify import read_bundle_json

    doc = read_bundle_json(project / "dist/digits-cnn-1.0.1.mbundle")
    assert doc["version"] == "1.0.1" and doc["description"] == "a new description"


def test_loading_dodo_imports_no_numpy_and_reads_each_version_once(digits_cpu_project):
    """The no-op path: runtime modules import no SDK and not even numpy; distribution versions are cached."""
    import subprocess
    import sys

    code = ("import sys, runpy, importlib.metadata as md; calls = []; real = md.version\n"
            "md.version = lambda d: (calls.append(d), real(d))[1]\n"
            "ns = runpy.run_path('dodo.py'); tasks = [t for k, f in ns.items() if k.startswith('task_') for t in f()]\n"
            "from mbuild import _io\n"
            "print('numpy' in sys.modules, len(calls), len(set(calls)), _io._installed_version.cache_info().misses,"
            " _io._dist_info_versions.cache_info().misses, 'jsonschema' in sys.modules)")
    for _ in range(2):  # the second load finds its manifests already checked against the schema
        out = subprocess.run([sys.executable, "-c", code], cwd=digits_cpu_project, capture_output=True, text=True,
                             check=True)
    numpy, calls, distinct, looked_up, listings, jsonschema = out.stdout.split()
    assert numpy == "False" and jsonschema == "False", out.stdout + out.stderr
    assert int(calls) == int(distinct), out.stdout  # metadata searched at most once per distribution
    assert int(looked_up) > 0 and int(listings) == 1, out.stdout  # versions asked for, sys.path listed once
    from mbuild.manifest import load_manifest
    from mbuild.sources.build import used_datasets
    from mbuild.tasks import used_datasets as used_by_tasks

    m = load_manifest(digits_cpu_project / "manifests" / "digits.yaml", check_targets=False)
    assert used_by_tasks(m) == used_datasets(m) == ["validation", "calibration"]


def test_cached_distribution_versions_agree_with_importlib_metadata():
    import importlib.metadata

    from mbuild._io import dist_version

    names = sorted({d.metadata["Name"] for d in importlib.metadata.distributions() if d.metadata["Name"]})
    assert len(names) > 50
    assert {n: dist_version(n) for n in names} == {n: importlib.metadata.version(n) for n in names}


def test_build_order_runs_each_runtime_together_lean_workers_first_and_covers_every_task(tmp_path):
    """A plain doit takes a model's tasks runtime by runtime; those whose worker needs no torch come first."""
    from mbuild.tasks import load_project

    project = make_project(tmp_path / "p", {"digits.yaml": (REPO / "manifests" / "digits.yaml").read_text()})
    loaded = load_project(project)
    order = loaded.build_order()
    every = [f"{kind}:{t['name']}" for kind in ("source", "convert", "variant", "check", "bundle")
             for t in loaded.tasks(kind)]
    assert sorted(order) == sorted(every) and len(order) == len(set(order))
    assert order[0] == "source:digits-cnn" and order[-1] == "bundle:digits-cnn"
    runtime = {f"{kind}:digits-cnn/{name}": t.runtime for name, t in loaded.manifests[0].targets.items()
               for kind in ("variant", "check")}
    blocks = [runtime.get(n) or n.split("/")[-1].split("-")[0] for n in order[1:-1]]
    assert blocks[0] == "onnxruntime", "the runtime without torch warms first and goes first"
    firsts = list(dict.fromkeys(blocks))
    assert blocks == sorted(blocks, key=firsts.index), f"runtimes interleave: {blocks}"
    proc = run_doit(project, "list", "--all", "-q")
    assert proc.returncode == 0, proc.stderr
