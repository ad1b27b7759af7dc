"""doit entry point: every manifest under manifests/ becomes source/variant/check/bundle tasks.

`doit` builds everything, `doit list` shows the tasks, `doit manifests=path.yaml` builds one manifest,
`doit release` signs and records the bundles (never part of a plain `doit`).
"""
import sys
from pathlib import Path

from doit import get_var

from mbuild._lock import lock_for_doit
from mbuild.tasks import DOIT_CONFIG, load_project  # noqa: F401 - DOIT_CONFIG is read by doit

(Path(__file__).resolve().parent / ".mbuild").mkdir(exist_ok=True)
lock_for_doit(Path(__file__).resolve().parent, sys.argv[1:])  # one build at a time; `doit list` needs no lock
_project = load_project(Path(__file__).resolve().parent, get_var("manifests", None))


def task_source():
    """Reference outputs, data sets and canonical ONNX of each manifest's model."""
    yield from _project.tasks("source")


def task_variant():
    """One converted, optimized artifact per target."""
    yield from _project.tasks("variant")


def task_check():
    """Each variant run on the validation data and gated on its tolerance."""
    yield from _project.tasks("check")


def task_bundle():
    """dist/<name>-<version>.mbundle per manifest."""
    yield from _project.tasks("bundle")


def task_release():
    """Sign and record each bundle as an immutable release (only when named: `doit release [key=PEM]`)."""
    yield from _project.tasks("release", get_var("key", None))


def task_manifest():
    """Manifests that failed to load (each fails with its message)."""
    yield {"basename": "manifest", "name": None, "actions": None}
    yield from _project.error_tasks()
