"""One error hierarchy so the CLI and doit actions can tell user mistakes from bugs.

Errors a user can cause derive from :class:`MbuildError`; they carry an exit code
and print as one line (no traceback). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

from dataclasses import dataclass


class MbuildError(Exception):
    """A problem the user can fix; printed as one message, exits with ``exit_code``."""

    exit_code = 1


@dataclass(frozen=True)
class Location:
    """Where in a YAML file a value sits (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class ManifestError(MbuildError):
    """The manifest is malformed or inconsistent; points at the offending YAML node.

    Example: ``digits.yaml:14:5: targets.cpu.recipe: 'int9' is not a recipe; did you mean 'int8'?``
    """

    exit_code = 2

    def __init__(self, message: str, location: Location | None = None, key_path: str = ""):
        message = _one_line(message)  # a value quoted from the manifest may hold a newline
        self.location = location
        self.key_path = key_path
        self.reason = message
        prefix = f"{location}: " if location else ""
        where = f"{key_path}: " if key_path else ""
        super().__init__(f"{prefix}{where}{message}")


class ManifestProblems(ManifestError):
    """Several problems of one manifest, reported together (one located line each) so one edit fixes them all."""

    def __init__(self, problems: list[ManifestError], limit: int = 10):
        shown = problems[:limit]
        first = shown[0]
        super().__init__(first.reason, first.location, first.key_path)
        self.problems = shown
        more = len(problems) - len(shown)
        lines = [str(p) for p in shown]
        if more:
            lines[-1] += f" (and {more} more problem(s) not shown)"
        self.args = ("\n".join(lines),)

    def __str__(self) -> str:
        return self.args[0]


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n") if ("\n" in text or "\r" in text) else text


class BuildError(MbuildError):
    """A build step failed (converter, quantizer, runtime); names the step and keeps the cause."""

    exit_code = 1


class ToleranceError(BuildError):
    """A variant's metrics are outside its tolerance."""


class MissingDependencyError(MbuildError):
    """An optional SDK is not installed; the message gives the install command."""

    exit_code = 3

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'mbuild[{extra}]'"
        )


class BundleError(MbuildError):
    """A bundle is corrupt, unsafe or does not match its checksums or schema."""

    exit_code = 1
