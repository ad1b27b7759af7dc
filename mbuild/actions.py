"""The process that does a step's work: a warm worker's child, or ``python -m mbuild.actions STEP MANIFEST [TARGET]``.

doit's side of every task is :func:`mbuild.task_action.run_task_step`. Each step runs in its own
process - a child forked from a warm worker of its runtime family (:mod:`mbuild.workers`) - so a
converter that crashes, leaks memory or slows later imports (litert-torch before torch.jit, say)
cannot take the build down with it, and the SDKs are imported once per build rather than once per
task. The step's output (converter chatter included) goes to its log file under ``.mbuild/logs/``;
doit shows mbuild's own result lines, and on a failure the error and where the log is. User errors
print one line and exit with their code; unexpected errors keep their traceback in the log and are
summarised in one line.
"""
from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from mbuild.errors import BuildError, MbuildError
from mbuild.task_action import STEP_LOG_ENV


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2:
        print("usage: python -m mbuild.actions {source,variant,check,bundle} MANIFEST [TARGET]", file=sys.stderr)
        return 2
    step, manifest_path, rest = argv[0], argv[1], argv[2:]
    quiet_frameworks()
    log_dir = manifest = None
    try:
        from mbuild.layout import layout_for
        from mbuild.manifest import load_manifest

        manifest = load_manifest(manifest_path, check_targets=False)
        lay = layout_for(manifest)
        log_dir = lay.target_dir(rest[0]) if rest and step != "convert" else lay.build_dir
        from mbuild.cache.hook import after_step, before_step

        if before_step(manifest, step, rest):  # restored from the shared cache (mbuild/cache)
            return 0
        if step == "source":
            from mbuild.steps import run_source

            run_source(manifest)
        elif step == "convert":
            from mbuild.steps import run_convert

            run_convert(manifest, rest[0])
        elif step == "variant":
            from mbuild.steps import run_variant

            run_variant(manifest, rest[0])
        elif step == "check":
            from mbuild.steps import run_check

            run_check(manifest, rest[0])
        elif step == "bundle":
            from mbuild.bundle.build import build_bundle

            path = build_bundle(manifest)
            print(f"bundle:{manifest.name}: wrote {path.relative_to(manifest.root)}")
        else:
            print(f"unknown step {step!r}", file=sys.stderr)
            return 2
        after_step(manifest, step, rest)
    except KeyboardInterrupt:  # Ctrl-C: doit's process says so in one line
        return 130
    except MbuildError as e:
        if _optional(manifest, step, rest):
            return _record(manifest, step, rest[0], str(e))
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - a converter or mbuild bug: keep the traceback in a file
        where = _write_log(log_dir, step)
        message = f"{step} step failed: {type(e).__name__}: {_first_line(e)}" + (
            f" (traceback in {where})" if where else "")
        if _optional(manifest, step, rest):
            return _record(manifest, step, rest[0], message)
        print(f"error: {message}", file=sys.stderr)
        return BuildError.exit_code
    return 0


def _optional(manifest, step: str, rest: list[str]) -> bool:
    """A step whose failure must not stop the bundle: a variant or check of a target with ``required: false``,
    or a base conversion that only such targets use."""
    if manifest is None or not rest:
        return False
    if step == "convert":
        from mbuild.conversions import conversion_users

        users = conversion_users(manifest, rest[0])
        return bool(users) and not any(manifest.targets[t].required for t in users)
    return step in ("variant", "check") and rest[0] in manifest.targets and not manifest.targets[rest[0]].required


def _record(manifest, step: str, target: str, reason: str) -> int:
    from mbuild.steps import record_failed_conversion, record_optional_failure

    reason = _without_root(manifest, reason)  # recorded in variant.json/report.json: no checkout-specific path
    try:
        if step == "convert":
            record_failed_conversion(manifest, target, reason)
        else:
            record_optional_failure(manifest, target, step, reason)
    except Exception as e:  # noqa: BLE001 - cannot even record it: fail the step as usual
        print(f"error: {reason} (and recording it failed: {e})", file=sys.stderr)
        return BuildError.exit_code
    return 0


def _without_root(manifest, text: str) -> str:
    """``text`` with the project root's absolute path removed (paths read relative to the project)."""
    import os

    return text.replace(f"{manifest.root}{os.sep}", "").replace(str(manifest.root), ".")


def quiet_frameworks() -> None:
    """Keep the frameworks' start-up chatter (oneDNN, CUDA probes, torchao) out of the build log."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("torchao", "torch._dynamo", "torch.utils._pytree", "absl", "tensorflow", "onnx2tf"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:500] if text else ""


def _write_log(folder: Path | None, step: str) -> Path | None:
    """The traceback goes to the step's log when it has one (a worker child), else to <step>-error.log."""
    import os

    step_log = os.environ.get(STEP_LOG_ENV)
    if step_log:
        traceback.print_exc()
        return Path(step_log)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{step}-error.log"
        path.write_text(traceback.format_exc())
        return path
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
