"""Artifact digests as build facts: what ``check:`` validated is what ``bundle:`` ships.

``variant:`` records the sha256 of every artifact file in variant.json; ``check:`` re-hashes the
files before it runs them and records the digests it validated (and which files it ran);
``bundle:`` packages a file only if its bytes still have that digest. The variant task's doit
``uptodate`` checks them too (:class:`ArtifactsIntact`: re-hashing a file only when its stat
signature changed), so a cached artifact corrupted on disk makes the variant rebuild instead of
shipping with its old "passed".
"""
from __future__ import annotations

import os
from pathlib import Path

from mbuild._io import files_of, read_json, sha256_file
from mbuild.errors import BuildError


def artifact_files(record: dict) -> list[str]:
    """The artifact and its companion files, as variant.json names them (relative to the variant folder)."""
    return [record["artifact"], *record.get("files", [])]


def artifact_digests(folder: Path, files: list[str]) -> dict[str, str]:
    """``{relative path: sha256}`` for every file of ``files`` under ``folder`` (a folder counts as its files)."""
    out = {}
    for f in files:
        for sub in files_of(Path(folder) / f):
            if sub.is_file():
                out[sub.relative_to(folder).as_posix()] = sha256_file(sub)
    return dict(sorted(out.items()))


def digest_problems(folder: Path, record: dict) -> list[str]:
    """How the files on disk differ from the digests variant.json recorded (empty: intact)."""
    recorded = record.get("digests")
    if not isinstance(recorded, dict):
        return ["variant.json records no artifact digests (built by an older mbuild)"]
    actual = artifact_digests(folder, artifact_files(record))
    problems = []
    for name in sorted(set(recorded) | set(actual)):
        where = os.path.relpath(Path(folder) / name)
        if name not in actual:
            problems.append(f"{where} is missing")
        elif name not in recorded:
            problems.append(f"{where} was not there when the variant was built")
        elif actual[name] != recorded[name]:
            problems.append(f"{where} changed after it was built (sha256 {actual[name][:12]}..., recorded "
                            f"{recorded[name][:12]}...)")
    return problems


def _read_record(variant_json: Path) -> dict | None:
    if not variant_json.exists():
        return None
    try:
        return read_json(variant_json)
    except ValueError:
        return None


def _signatures(folder: Path, record: dict) -> dict[str, list[int]]:
    """``{file: [size, mtime_ns, ctime_ns, inode]}`` of every artifact file (a folder counts as its files)."""
    out = {}
    for f in artifact_files(record):
        for sub in files_of(Path(folder) / f):
            try:
                info = os.stat(sub)
            except OSError:
                continue
            out[sub.relative_to(folder).as_posix()] = [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]
    return out


class ArtifactsIntact:
    """doit ``uptodate`` of a variant task: False when an artifact no longer has its recorded digest.

    Re-hashing every artifact on every no-op cost ~2 ms per MB (37 ms of a no-op on the example
    matrix, seconds for real models). So once the task ran, the files' stat signatures are saved with
    their verified digests; a file whose size, mtime, ctime and inode are all as saved is taken as
    verified. Any write, copy or ``touch -d`` changes its ctime, which no user can set back, and
    re-hashes it. ``check:`` and ``bundle:`` still re-hash what they run or ship
    (:func:`require_intact`), and touch a file they find changed, so this task rebuilds it.
    """

    KEY = "mbuild:artifact-signatures"

    def __init__(self, variant_json: str):
        self.variant_json = variant_json

    def configure_task(self, task) -> None:
        task.value_savers.append(self._save)

    def __call__(self, task, values) -> bool:
        path = Path(self.variant_json)
        record = _read_record(path)
        if record is None:
            return False
        if record.get("status") == "not built":
            return True
        saved = values.get(self.KEY)
        if saved and saved == _signatures(path.parent, record):
            return True
        return not digest_problems(path.parent, record)

    def _save(self) -> dict:
        """The signatures of the files just built, if they have the digests variant.json records."""
        path = Path(self.variant_json)
        record = _read_record(path)
        if record is None or record.get("status") == "not built" or digest_problems(path.parent, record):
            return {self.KEY: None}
        return {self.KEY: _signatures(path.parent, record)}


def require_intact(folder: Path, record: dict, step: str) -> dict[str, str]:
    """The recorded digests, after checking the files still have them; BuildError naming the file otherwise."""
    problems = digest_problems(folder, record)
    if problems:
        mark_changed(folder, record)
        raise BuildError(f"{step}: {problems[0]}; run doit again: the variant task rebuilds it"
                         + (f" ({len(problems) - 1} more)" if len(problems) > 1 else ""))
    return dict(record["digests"])


def mark_changed(folder: Path, record: dict) -> None:
    """Touch the artifact files after a digest problem, so the variant's stat check re-hashes them and reruns it.

    A file changed in place with its size and all its times kept (a disk fault) passes
    :class:`ArtifactsIntact`'s stat check; the step that finds it must not leave "run doit again" a loop.
    Touching them all (not re-hashing to pick the changed one) is enough: the re-hash finds it.
    """
    for f in artifact_files(record):
        for sub in files_of(Path(folder) / f):
            try:
                os.utime(sub)
            except OSError:
                pass


def check_other_loadables(runtime, ctx, record: dict, report: dict, digests: dict[str, str]) -> dict:
    """Run every other file an app may load (e.g. ``model.ort`` next to ``model.onnx``) through the same gate.

    The report's ``validated`` says exactly which files were run and which digests they had; a
    loadable file that misses the tolerance fails the check like the artifact would.
    """
    from mbuild.recipes import tolerance_for
    from mbuild.sources.data import read_labels
    from mbuild.validate import check_tolerance, compare_outputs

    validation = report["validation"]
    suffixes = tuple(getattr(runtime, "loadable_suffixes", ()))
    others = [f for f in record.get("files", []) if f.endswith(suffixes) and f != record["artifact"]]
    ran = [record["artifact"]] if validation["status"] in ("passed", "failed") else []
    not_run = {f: "not a model file this runtime loads" for f in record.get("files", []) if f not in others}
    if validation["status"] in ("passed", "failed") and others:
        inputs = ctx.validation_inputs()
        reference = ctx.reference_outputs()
        labels = read_labels(ctx.source_dir / "data" / "validation.npz")
        tolerance = tolerance_for(ctx.manifest, ctx.target, ctx.recipe)
        for f in others:
            result = runtime.run(ctx, ctx.out_dir / f, inputs)
            if result.outputs is None:
                not_run[f] = result.skipped_reason or "the runtime could not run it here"
                continue
            ran.append(f)
            failures, _ = check_tolerance(compare_outputs(reference, result.outputs, ctx.manifest.outputs, labels),
                                          tolerance)
            for failure in failures:
                validation.setdefault("failures", []).append({**failure, "message": f"{f}: {failure['message']}"})
            if failures:
                validation["status"] = "failed"
    elif validation["status"] not in ("passed", "failed"):
        not_run = {f: validation.get("reason") or "the runtime cannot run here" for f in artifact_files(record)}
    validation["files_run"] = ran
    report["validated"] = {"digests": digests, "run": ran, "not_run": not_run}
    if check_artifacts_unchanged(ctx.out_dir, digests):
        raise BuildError(f"check:{ctx.manifest.name}/{ctx.target.name}: an artifact changed while it was checked; "
                         "run doit again")
    return report


def check_artifacts_unchanged(folder: Path, digests: dict[str, str]) -> list[str]:
    """Files whose bytes no longer have ``digests`` (names only)."""
    actual = {name: sha256_file(Path(folder) / name) if (Path(folder) / name).is_file() else None for name in digests}
    return [name for name, d in digests.items() if actual[name] != d]


def packaging_problems(folder: Path, record: dict, report: dict) -> list[str]:
    """Why a checked variant's files may not be packaged: changed since the check, or never checked by digest."""
    validated = (report.get("validated") or {}).get("digests")
    if not isinstance(validated, dict):
        return ["its check recorded no validated digests (checked by an older mbuild); run doit again"]
    if validated != record.get("digests"):
        return ["variant.json and the check disagree on the artifact digests; run doit again"]
    problems = digest_problems(folder, record)
    if problems:
        mark_changed(folder, record)
    return [f"{p}; run doit again: the variant task rebuilds it" for p in problems]
