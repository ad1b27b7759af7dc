"""Skip, rather than fail, when mbuild's own code changed while a rebuild-sensitive test ran.

Every task depends on a digest of mbuild's code (mbuild.tasks._code_digest), so an edit made
to the working tree during a test legitimately rebuilds everything. That cannot happen in CI;
in a shared working tree it would turn "nothing was rebuilt" assertions into false alarms.
"""
from __future__ import annotations

import pytest


def code_digest() -> str:
    from mbuild import tasks

    tasks._CODE_DIGEST = None
    try:
        return tasks._code_digest()
    finally:
        tasks._CODE_DIGEST = None


def require_same_code(before: str) -> None:
    if code_digest() != before:
        pytest.skip("mbuild's code changed during the test (a concurrent edit); rebuild expectations do not hold")
