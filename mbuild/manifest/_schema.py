"""Check manifest data against schemas/manifest.schema.json and word the first error well."""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from mbuild.errors import ManifestError, ManifestProblems
from mbuild.manifest._yaml import Positions, dotted

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def schema_path(name: str) -> Path:
    """Where the JSON Schema ``name`` is: ``schemas/`` of the checkout, or inside the installed package."""
    for base in (SCHEMA_DIR, Path(__file__).resolve().parents[1] / "schemas"):
        if (base / name).exists():
            return base / name
    raise FileNotFoundError(name)


@functools.cache
def load_schema(name: str) -> dict:
    """The JSON Schema shipped in ``schemas/`` (or inside the installed package)."""
    return json.loads(schema_path(name).read_text())


@functools.cache
def _validator(name: str):
    """A 2020-12 validator whose 'integer' is a real int: 1.0 is not a shape entry (JSON Schema says it is)."""
    import jsonschema
    from jsonschema import validators

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine("integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool))
    return validators.extend(base, type_checker=checker)(load_schema(name))


def suggest(word: str, choices) -> str:
    """A "; did you mean 'x'?" tail, or '' when nothing is close."""
    import difflib  # only when there is a mistake to name

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


MAX_PROBLEMS = 10


def check_manifest_schema(data: Any, positions: Positions, state_dir: Path | None = None) -> None:
    """Raise ManifestError naming every schema violation (up to MAX_PROBLEMS), in file order.

    With ``state_dir`` (a project's .mbuild/), a document already found valid by this schema and this
    checker is not checked again: a no-op build then never imports jsonschema (most of its load time).
    """
    key = _valid_key(data) if state_dir is not None else None
    if key is not None and key in _known_valid(state_dir):
        return
    validator = _validator("manifest.schema.json")
    errors = list(validator.iter_errors(data))
    if not errors:
        if key is not None:
            _remember_valid(state_dir, key)
        return
    leaves = _leaves(errors)
    worded = [w for w in (_word(e, data, positions) for e in leaves) if w is not None]
    if not worded:  # only echoes: say where, in the validator's words
        e = leaves[0]
        worded = [ManifestError(e.message[:300], positions.of(tuple(e.absolute_path)), dotted(tuple(e.absolute_path)))]
    raise_all(worded)


VALID_FILE = "schema-valid.json"
_KEEP_VALID = 64  # documents remembered per project (a manifest edit adds one)


def _valid_key(data: Any) -> str | None:
    """Digest of the document, the schema and this checker's code; None if the data is not plain JSON."""
    import hashlib

    try:
        doc = json.dumps(data, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(doc.encode() + _checker_digest().encode()).hexdigest()


@functools.cache
def _checker_digest() -> str:
    """The schema and this module's code: what decides validity besides the document (once per process)."""
    import hashlib

    h = hashlib.sha256(schema_path("manifest.schema.json").read_bytes())  # its bytes: no parse on a no-op
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def _known_valid(state_dir: Path) -> list[str]:
    try:
        known = json.loads((Path(state_dir) / VALID_FILE).read_text())
    except (OSError, ValueError):
        return []
    return known if isinstance(known, list) else []


def _remember_valid(state_dir: Path, key: str) -> None:
    if not Path(state_dir).is_dir():
        return
    from mbuild._io import write_json_atomic

    known = [k for k in _known_valid(state_dir) if k != key][-(_KEEP_VALID - 1):] + [key]
    try:
        write_json_atomic(Path(state_dir) / VALID_FILE, known)
    except OSError:  # a read-only project still loads; it only checks again next time
        pass


def raise_all(problems: list[ManifestError]) -> None:
    """One ManifestError for all ``problems`` (each located), sorted by place, duplicates and echoes dropped."""
    if not problems:
        return
    seen, unique = set(), []
    for p in sorted(problems, key=_place):
        text = str(p)
        if text not in seen:
            seen.add(text)
            unique.append(p)
    if len(unique) == 1:
        raise unique[0]
    raise ManifestProblems(unique)


def _place(p: ManifestError):
    loc = p.location
    return (loc.file, loc.line, loc.column) if loc else ("", 0, 0)


def _leaves(errors):
    """Descend into oneOf/anyOf/allOf/if-then contexts so messages name the real fault."""
    out = []
    for e in errors:
        if e.validator in ("allOf", "then", "$ref") and e.context:
            out.extend(_leaves(e.context))
        else:
            out.append(e)
    # an unknown key also fails the if/then of the same object; keep the clearest message
    return out


_QUOTED = re.compile(r"'([^']*)'")


def _word(error, data, positions: Positions) -> ManifestError | None:
    path = tuple(error.absolute_path)
    where = dotted(path)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        instance = error.instance if isinstance(error.instance, dict) else {}
        allowed = _allowed_keys(error.schema, instance)
        unknown = [k for k in instance if k not in allowed]
        if not unknown:  # every key is known: an echo of a wrong value that failed an if/then branch
            return None
        key = unknown[0]
        hint = suggest(key, allowed) or (f"; allowed keys: {', '.join(sorted(allowed))}" if allowed else "")
        return ManifestError(f"unknown key {key!r}{hint}", positions.of(path + (key,), key=True),
                             dotted(path + (key,)))
    if error.validator == "required":
        missing = _QUOTED.findall(error.message)[:1]
        name = missing[0] if missing else "?"
        return ManifestError(f"missing required key {name!r}", positions.of(path, key=True) or positions.of(path), where)
    if error.validator == "enum":
        choices = error.validator_value
        hint = suggest(error.instance, choices)
        return ManifestError(
            f"{error.instance!r} is not one of {', '.join(map(repr, choices))}{hint}", positions.of(path), where)
    if error.validator == "const":
        return ManifestError(f"must be {error.validator_value!r}, got {error.instance!r}", positions.of(path), where)
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return ManifestError(f"expected {_article(expected)}, got {_describe(error.instance)}", positions.of(path), where)
    if error.validator == "pattern":
        return ManifestError(f"{error.instance!r} does not have the expected form ({error.validator_value})",
                             positions.of(path), where)
    if error.validator in ("maxProperties", "minProperties") and path == ("source",):
        return ManifestError("name exactly one source framework: pytorch, onnx or tensorflow",
                             positions.of(path), where)
    if error.validator == "propertyNames":
        bad = error.instance
        rule = ("1-256 characters, no control characters" if path in (("inputs",), ("outputs",))
                else "letters, digits, '_', '.', '-'; starts with a letter")
        return ManifestError(f"{bad!r} is not a valid name ({rule})",
                             positions.of(path + (bad,), key=True) or positions.of(path), where)
    if error.validator == "oneOf":
        return ManifestError(f"{_describe(error.instance)} is not valid here: {error.schema.get('description', error.message)}",
                             positions.of(path), where)
    return ManifestError(error.message, positions.of(path), where)


def _allowed_keys(schema: dict, instance: dict) -> list[str]:
    """Keys an object may hold under ``schema``, including those of matching if/then branches."""
    import jsonschema

    root = load_schema("manifest.schema.json")
    keys: list[str] = list(schema.get("properties", {}))
    for sub in schema.get("allOf", []):
        cond = sub.get("if")
        if cond is not None and jsonschema.Draft202012Validator(cond).is_valid(instance):
            then = sub.get("then", {})
            ref = then.get("$ref")
            if ref:
                then = root["$defs"][ref.rsplit("/", 1)[-1]]
            keys.extend(then.get("properties", {}))
    return keys


def _article(name: str) -> str:
    return {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
            "number": "a number", "boolean": "true or false", "null": "nothing"}.get(name, name)


def _describe(value) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "an empty value"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return f"{type(value).__name__} {value!r}"
