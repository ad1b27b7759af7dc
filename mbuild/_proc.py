"""What Linux says of a process in ``/proc/<pid>/stat``: its state and its start time.

Liveness checks read it to tell a zombie from a running process and a reused pid from the one recorded.
"""
from __future__ import annotations

from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """The fields after the command name (state first, start time at index 19); None if gone or not Linux.

    Split after the last ") ": a command name may itself hold one.
    """
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
