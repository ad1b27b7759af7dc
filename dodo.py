"""doit entry point: every manifest under manifests/ becomes source/variant/check/bundle tasks.

`doit` builds everything, `doit list` shows the tasks, `doit manifests=path.yaml` builds one manifest,
`doit release` signs and records the bundles (never part of a plain `doit`).
"""
from pathlib import Path

from mbuild.dodo import define_tasks

define_tasks(globals(), Path(__file__).parent)
