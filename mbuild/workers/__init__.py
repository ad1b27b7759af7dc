"""Warm worker processes: each runtime family's SDKs imported once per build, each step in a fresh fork.

:mod:`.pool` is the doit side, :mod:`.serve` the worker, :mod:`.families` what each family imports.
"""
from __future__ import annotations

import os
import sys


def phase(text: str) -> None:
    """Say what a long step is doing now, in its log; the build's heartbeat line shows the latest one."""
    if os.environ.get("MBUILD_STEP_LOG"):
        print(f"phase: {text}", file=sys.stderr, flush=True)
