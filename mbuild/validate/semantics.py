"""Output declarations resolved against the real output shapes: axes, parts, class counts.

The manifest says what an output means; this module turns that into concrete array axes and
slices, and refuses a declaration that does not fit the model (a class axis that is not there,
parts outside the axis, an ambiguous axis). It never guesses: an axis is the declared one, or the
only axis longer than 1 when there is exactly one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import OutputSpec


class DeclarationError(ValueError):
    """An output declaration does not fit the model; ``field`` is the key under ``outputs.<name>``."""

    def __init__(self, output: str, message: str, field: tuple = ()):
        super().__init__(message)
        self.output = output
        self.field = field


@dataclass(frozen=True)
class Part:
    """One part of a detection output: ``output``'s model axis ``axis``, entries [start, stop)."""

    name: str
    output: str
    axis: int
    start: int
    stop: int
    format: str = "xyxy"
    units: str = "pixels"
    activation: str = "none"


@dataclass(frozen=True)
class Resolved:
    """An output's declaration with every axis made concrete for its real shape (batch axis included)."""

    name: str
    kind: str
    shape: tuple[int, ...]
    axis: int | None = None  # class / vocabulary / feature / channel axis (model axis, non-negative)
    parts: dict[str, Part] = field(default_factory=dict)
    time_axis: int | None = None  # sequence outputs

    @property
    def classes(self) -> int | None:
        return self.shape[self.axis] if self.axis is not None else None


def _norm(axis: int, shape: tuple[int, ...], output: str, where: tuple) -> int:
    if not -len(shape) <= axis < len(shape):
        raise DeclarationError(output, f"axis {axis} does not exist: the model's output has shape {list(shape)}", where)
    return axis % len(shape)


def _only_long_axis(shape: tuple[int, ...], output: str, what: str) -> int:
    long = [a for a, n in enumerate(shape) if n > 1]
    if len(long) == 1:
        return long[0]
    if not long:
        raise DeclarationError(output, f"a {what} output needs an axis with more than one entry; the model's output "
                                       f"has shape {list(shape)}", ("kind",))
    raise DeclarationError(output, f"the model's output has shape {list(shape)}, with several axes longer than 1 "
                                   f"({', '.join(map(str, long))}); declare which is the {what} axis with 'axis:'",
                           ("axis",))


def resolve(spec: "OutputSpec", shapes: dict[str, tuple[int, ...]]) -> Resolved:
    """Concrete axes for ``spec`` given every output's model shape (batch axis included)."""
    shape = tuple(shapes[spec.name])
    name, kind = spec.name, spec.kind
    axis = _norm(spec.axis, shape, name, ("axis",)) if spec.axis is not None else None
    if kind == "classification":
        axis = axis if axis is not None else _only_long_axis(shape, name, "class")
        if shape[axis] < 2:
            raise DeclarationError(name, f"the class axis {axis} has {shape[axis]} entry; a classifier needs 2 or more "
                                         f"(the model's output has shape {list(shape)})", ("axis",))
        return Resolved(name, kind, shape, axis)
    if kind == "sequence":
        axis = axis if axis is not None else len(shape) - 1
        others = [a for a, n in enumerate(shape) if n > 1 and a != axis]
        if len(others) != 1:
            raise DeclarationError(name, f"a sequence output has one time axis besides the vocabulary axis {axis}; "
                                         f"the model's output has shape {list(shape)}", ("axis",))
        return Resolved(name, kind, shape, axis, time_axis=others[0])
    if kind == "detection":
        return Resolved(name, kind, shape, None, parts=_parts(spec, shapes))
    return Resolved(name, kind, shape, axis)


def _parts(spec: "OutputSpec", shapes: dict[str, tuple[int, ...]]) -> dict[str, Part]:
    parts = {}
    anchors = {}
    for pname, p in spec.parts.items():
        where = ("parts", pname)
        source = p.output or spec.name
        shape = tuple(shapes[source])
        axis = _norm(p.axis, shape, spec.name, where + ("axis",))
        start, stop = p.range if p.range is not None else (0, shape[axis])
        if stop > shape[axis]:
            raise DeclarationError(spec.name, f"part {pname!r} takes entries [{start}, {stop}) of axis {axis}, which has "
                                              f"{shape[axis]} (output {source!r} has shape {list(shape)})", where + ("range",))
        if pname == "boxes" and stop - start != 4:
            raise DeclarationError(spec.name, f"boxes take 4 entries along their axis; axis {axis} of {source!r} "
                                              f"(shape {list(shape)}) gives {stop - start}", where)
        rest = [n for a, n in enumerate(shape) if a != axis]
        anchors[pname] = int(_prod(rest))
        parts[pname] = Part(pname, source, axis, start, stop, p.format, p.units, p.activation)
    if len(set(anchors.values())) > 1:
        raise DeclarationError(spec.name, "boxes and scores must describe the same candidates: "
                                          + ", ".join(f"{k}: {v} candidates" for k, v in anchors.items()), ("parts",))
    return parts


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def resolve_all(specs: dict[str, "OutputSpec"], shapes: dict[str, tuple[int, ...]]) -> dict[str, Resolved]:
    return {name: resolve(spec, shapes) for name, spec in specs.items()}
