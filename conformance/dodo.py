"""doit entry point of the conformance project: the same tasks as the repository's, rooted here."""
from pathlib import Path

from mbuild.dodo import define_tasks

define_tasks(globals(), Path(__file__).parent)
