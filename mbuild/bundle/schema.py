"""bundle.json is checked against schemas/bundle.schema.json whenever it is written or verified."""
from __future__ import annotations

from mbuild.errors import BundleError
from mbuild.manifest._schema import load_schema


def bundle_schema_problems(doc: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema("bundle.schema.json"))
    return [f"bundle.json {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def check_bundle_document(doc: dict) -> None:
    problems = bundle_schema_problems(doc)
    if problems:
        raise BundleError("bundle.json does not match schemas/bundle.schema.json: " + "; ".join(problems[:5]))
