"""Build state that heals: a task whose output files were deleted or changed since it made them is out of date.

doit only asks whether a task's declared targets exist; a deleted artifact beside ``variant.json`` or a
corrupted ``report.json`` used to fail every later build (FileNotFoundError, JSONDecodeError) and never
heal. :class:`IntactOutputs` is a doit ``uptodate`` entry: after the task runs it saves the size and
modification time of every file the task wrote under its folders; before the next run it compares them,
and any difference reruns the task (and so everything after it). Staging folders that a killed build
left behind (``atomic_path``'s ``.<name>.<random>`` siblings) are removed when the next build starts.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

_STAGING = re.compile(r"^\.[^.].*\.[a-z0-9_]{8}$")  # tempfile.mkdtemp(prefix=f".{name}.")


class IntactOutputs:
    """doit uptodate: False when a file the task wrote under ``folders`` is gone or differs from what it wrote."""

    KEY = "mbuild:outputs"

    def __init__(self, *folders: Path | str):
        self.folders = [Path(f) for f in folders]
        self.started_ns = 0

    def configure_task(self, task) -> None:
        task.value_savers.append(self._save)

    def __call__(self, task, values) -> bool:
        self.started_ns = time.time_ns()
        recorded = values.get(self.KEY)
        if not isinstance(recorded, dict):
            return True  # never recorded (first build, older state): the other checks decide
        for rel, seen in recorded.items():
            try:
                info = os.stat(rel)
            except OSError:
                return False
            if [info.st_size, info.st_mtime_ns] != seen:
                return False
        return True

    def _save(self) -> dict:
        """Files written since the task started (another task's files in a shared folder are older)."""
        out = {}
        for folder in self.folders:
            for path in sorted(_files(folder)):
                info = path.stat()
                if info.st_mtime_ns >= self.started_ns - 2_000_000_000:  # coarse-clock file systems
                    out[path.as_posix()] = [info.st_size, info.st_mtime_ns]
        return {self.KEY: out}


def _files(folder: Path):
    if folder.is_file():
        yield folder
        return
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _STAGING.match(d)]
        for f in files:
            yield Path(root) / f


def remove_staging(root: Path) -> list[Path]:
    """Delete the staging folders a killed build left under build/ and dist/ (call with the build lock held)."""
    removed = []
    for top in (Path(root) / "build", Path(root) / "dist"):
        if not top.is_dir():
            continue
        for dirpath, dirs, _ in os.walk(top):
            for d in list(dirs):
                if _STAGING.match(d):
                    shutil.rmtree(Path(dirpath) / d, ignore_errors=True)
                    removed.append(Path(dirpath) / d)
                    dirs.remove(d)
    return removed


def clean_paths(*paths: Path | str):
    """A doit clean action removing ``paths`` (files or folders) and the folders they leave empty under build/."""
    targets = [Path(p) for p in paths]

    def clean() -> None:
        for p in targets:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists() or p.is_symlink():
                p.unlink()
            parent = p.parent
            while parent.name and parent.parts[0] in ("build", "dist") and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        return None

    clean.__name__ = f"remove {', '.join(p.as_posix() for p in targets)}"
    return clean
