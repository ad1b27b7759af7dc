"""The body of every project's dodo.py: lock, load the manifests under a root, define the doit tasks.

A project's dodo.py is two lines (see the repository's dodo.py); the conformance suite, tests and
users' own projects share this one definition.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from mbuild.tasks import DOIT_CONFIG


def define_tasks(namespace: dict, root: Path) -> None:
    """Put DOIT_CONFIG and the ``task_*`` generators for ``root`` into a dodo module's namespace."""
    from doit import get_var

    from mbuild._lock import lock_for_doit
    from mbuild.progress import install_interrupt_hook
    from mbuild.tasks import load_project
    from mbuild.workers.pool import BUILD_PID_ENV

    root = Path(root).resolve()
    (root / ".mbuild").mkdir(exist_ok=True)
    lock_for_doit(root, sys.argv[1:])  # one build at a time; `doit list` needs no lock
    install_interrupt_hook()
    os.environ[BUILD_PID_ENV] = str(os.getpid())  # the build's warm workers end with this process
    project = load_project(root, get_var("manifests", None))

    def task_source():
        """Reference outputs, data sets and canonical ONNX of each manifest's model."""
        yield from project.tasks("source")

    def task_convert():
        """One base conversion per model and conversion path, shared by that runtime's variants."""
        yield from project.tasks("convert")

    def task_variant():
        """One converted, optimized artifact per target."""
        yield from project.tasks("variant")

    def task_check():
        """Each variant run on the validation data and gated on its tolerance."""
        yield from project.tasks("check")

    def task_bundle():
        """dist/<name>-<version>.mbundle per manifest."""
        yield from project.tasks("bundle")

    def task_release():
        """Sign and record each bundle as an immutable release (only when named: `doit release [key=PEM]`)."""
        yield from project.tasks("release", get_var("key", None))

    def task_manifest():
        """Manifests that failed to load (each fails with its message)."""
        yield {"basename": "manifest", "name": None, "actions": None, "doc": "manifests that failed to load"}
        yield from project.error_tasks()

    config = {**DOIT_CONFIG, "default_tasks": [*project.build_order(), *DOIT_CONFIG["default_tasks"]]}
    namespace.update({"DOIT_CONFIG": config, "task_source": task_source, "task_convert": task_convert,
                      "task_variant": task_variant,
                      "task_check": task_check, "task_bundle": task_bundle, "task_release": task_release,
                      "task_manifest": task_manifest})
