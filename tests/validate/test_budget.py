"""Budgets as gates: a broken budget fails the check with its numbers; warn mode keeps the variant."""
from __future__ import annotations

import json

from mbuild.validate.budget import check_budget
from tests.conftest import DIGITS_CPU, executed_tasks, make_project, run_doit

NUMBERS = {"size_bytes": 3 * 1024 * 1024, "host_latency_ratio": 1.4, "coverage": 0.8,
           "estimates": {"iphone-7": ("iOS 2016-2018", 12.0), "iphone-8": ("iOS 2016-2018", 9.0),
                         "pixel-8": ("Android 2022+", 2.0)}}


def test_every_broken_limit_is_a_failure_with_its_numbers():
    budget = {"size_mb_max": 2, "host_latency_ratio_max": 1.1, "accelerator_coverage_min": 0.9,
              "estimated_latency_ms_max": {"device_class": "iOS 2016-2018", "ms": 10}}
    failures = {f["tolerance"]: f for f in check_budget(budget, NUMBERS)}
    assert set(failures) == set(budget)
    assert failures["size_mb_max"]["message"] == "budget: size 3.000 MB is above size_mb_max 2 MB"
    assert "1.400x the fp32 sibling's, above host_latency_ratio_max 1.1" in failures["host_latency_ratio_max"]["message"]
    assert "coverage 0.800 is below accelerator_coverage_min 0.9" in failures["accelerator_coverage_min"]["message"]
    est = failures["estimated_latency_ms_max"]
    assert est["device"] == "iphone-7" and est["value"] == 12.0     # the worst device of the class
    assert "12.000 ms on iphone-7 (device_class 'iOS 2016-2018') is above estimated_latency_ms_max 10 ms" in est["message"]


def test_a_met_budget_and_an_uncheckable_one():
    met = {"size_mb_max": 4, "host_latency_ratio_max": 1.5, "accelerator_coverage_min": 0.5,
           "estimated_latency_ms_max": {"device": "pixel-8", "ms": 3}}
    assert check_budget(met, NUMBERS) == []
    uncheckable = check_budget({"host_latency_ratio_max": 1.1, "accelerator_coverage_min": 0.9,
                                "estimated_latency_ms_max": {"device_class": "iOS 2022+", "ms": 3}},
                               {"size_bytes": 1, "estimates": NUMBERS["estimates"]})
    assert [f["value"] for f in uncheckable] == [None, None, None]
    assert all("cannot be checked" in f["message"] for f in uncheckable)


ONE_TARGET = DIGITS_CPU.replace("  cpu-int8: {runtime: onnxruntime, recipe: int8}\n", "")


def test_budget_fails_the_check_and_warn_mode_keeps_the_variant(tmp_path):
    """A real build: the fp32 digits CNN (~0.4 MB) against a 0.1 MB budget, then the same in warn mode."""
    text = ONE_TARGET + "budget: {size_mb_max: 0.1, estimated_latency_ms_max: {device: iphone-7, ms: 100}}\n"
    project = make_project(tmp_path / "fail", {"digits.yaml": text})
    proc = run_doit(project)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "budget: size 0." in out and "MB is above size_mb_max 0.1 MB" in out
    assert not (project / "dist/digits-cnn-1.0.0.mbundle").exists()
    report = json.loads((project / "build/digits-cnn/targets/cpu-fp32/report.json").read_text())
    assert report["budget"]["status"] == "failed" and report["validation"]["status"] == "failed"

    # the same project in warn mode: the budget is part of the check's digest, so only check and bundle rerun
    (project / "manifests" / "digits.yaml").write_text(text.replace("budget: {", "budget: {mode: warn, "))
    proc = run_doit(project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning: check:digits-cnn/cpu-fp32: budget: size 0." in proc.stderr  # warnings go to stderr
    assert executed_tasks(proc.stdout) == {"check:digits-cnn/cpu-fp32", "bundle:digits-cnn"}
    assert (project / "dist/digits-cnn-1.0.0.mbundle").exists()


def test_manifest_accepts_budgets_and_refuses_unknown_budget_keys(tmp_path):
    import pytest

    from mbuild.errors import ManifestError
    from mbuild.manifest import load_manifest
    from mbuild.validate.budget import budget_for

    text = ONE_TARGET.replace("cpu-fp32: {runtime: onnxruntime, recipe: fp32}",
                              "cpu-fp32: {runtime: onnxruntime, recipe: fp32, budget: {size_mb_max: 1, mode: warn}}")
    text += "budget: {size_mb_max: 5, host_latency_ratio_max: 1.2}\n"
    project = make_project(tmp_path / "ok", {"m.yaml": text})
    manifest = load_manifest(project / "manifests" / "m.yaml")
    assert budget_for(manifest, "cpu-fp32") == {"size_mb_max": 1, "host_latency_ratio_max": 1.2, "mode": "warn"}
    bad = make_project(tmp_path / "bad", {"m.yaml": ONE_TARGET + "budget: {size_mb: 1}\n"})
    with pytest.raises(ManifestError, match="size_mb"):
        load_manifest(bad / "manifests" / "m.yaml")


def test_validate_warns_about_a_budget_on_an_unknown_device_or_class(tmp_path):
    from tests.conftest import run_mbuild

    text = ONE_TARGET + "budget: {estimated_latency_ms_max: {device: iphone-99, ms: 5}}\n"
    project = make_project(tmp_path / "p", {"m.yaml": text})
    proc = run_mbuild("validate", str(project / "manifests" / "m.yaml"))
    assert proc.returncode == 0
    assert "budget.estimated_latency_ms_max.device: 'iphone-99' is not in the device database" in proc.stderr
