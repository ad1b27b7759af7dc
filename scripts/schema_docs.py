"""Write docs/manifest.md from schemas/manifest.schema.json, so the reference never drifts from the schema."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _type(node: dict, defs: dict) -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.replace('_', '-')})" if name not in ("path", "identifier") else name
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    if "oneOf" in node:
        return " or ".join(_type(n, defs) for n in node["oneOf"])
    t = node.get("type", "")
    if t == "array" and "items" in node:
        return f"list of {_type(node['items'], defs)}"
    if t == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"mapping name → {_type(node['additionalProperties'], defs)}"
    return t if isinstance(t, str) else " or ".join(t)


def _table(props: dict, required: list, defs: dict) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, node in props.items():
        req = " (required)" if key in required else ""
        default = f"`{json.dumps(node['default'])}`" if "default" in node else ""
        desc = node.get("description", "")
        lines.append(f"| `{key}`{req} | {_type(node, defs)} | {default} | {desc} |")
    return lines


def _inline_objects(node: dict) -> list[dict]:
    """Objects written in place (not $ref'd) under a key: the node itself, its oneOf/anyOf choices, its list items."""
    found = []
    for candidate in [node, *node.get("oneOf", []), *node.get("anyOf", []), node.get("items") or {}]:
        if isinstance(candidate, dict) and candidate.get("properties"):
            found.append(candidate)
    return found


def _nested(prefix: str, props: dict, defs: dict) -> list[str]:
    """A table for every nested mapping, so each key of the format is documented (source.pytorch.weights, image, ...)."""
    out = []
    for key, node in props.items():
        for obj in _inline_objects(node):
            where = f"{prefix}.{key}"
            out += ["", f"### `{where}`", ""]
            if obj is not node and obj.get("description"):
                out += [obj["description"], ""]
            out += _table(obj["properties"], obj.get("required", []), defs)
            out += _nested(where, obj["properties"], defs)
    return out


def render() -> str:
    schema = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    defs = schema["$defs"]
    out = ["# Manifest reference (format 1)", "",
           "Generated from `schemas/manifest.schema.json` by `scripts/schema_docs.py`; the schema is the source of truth.",
           "Editors complete and check manifests through the modeline "
           "`# yaml-language-server: $schema=../schemas/manifest.schema.json`.", "",
           schema["description"], "", "## Top level", ""]
    out += _table(schema["properties"], schema.get("required", []), defs)
    for name, node in defs.items():
        if name in ("path", "identifier"):
            continue
        props = dict(node.get("properties", {}))
        for sub in node.get("allOf", []):
            ref = sub.get("then", {}).get("$ref")
            if ref:
                props.setdefault("…", {"description": f"plus the keys of [{ref.rsplit('/', 1)[-1]}]"
                                                      f"(#{ref.rsplit('/', 1)[-1].replace('_', '-')}) when its condition holds"})
        out += ["", f"## {name}", ""]
        if node.get("description"):
            out += [node["description"], ""]
        if props:
            out += _table(props, node.get("required", []), defs)
            out += _nested(name, {k: v for k, v in props.items() if k != "…"}, defs)
        else:
            out += [f"Type: {_type(node, defs)}"]
        for sub in node.get("allOf", []):
            then = sub.get("then", {})
            cond = sub.get("if", {}).get("properties", {})
            if "properties" in then and cond:
                key, value = next(iter(cond.items()))
                out += ["", f"### {name} with `{key}: {value.get('const')}`", ""]
                out += _table(then["properties"], then.get("required", []), defs)
                out += _nested(name, then["properties"], defs)
    out += ["", "## Rules beyond the schema", "",
            "- Paths are relative to the file that writes them and may not leave the project root (symlinks resolved).",
            "- A manifest starts only project code: `source.pytorch.model` names a class or function defined in a "
            "project file (or in an installed package the project lists under `[tool.mbuild] source-modules`). "
            "`mbuild validate` imports that file in a child process to check the name. Importing a model file runs "
            "its code, and so does loading a TensorFlow SavedModel or Keras file: build only models you trust.",
            "- `extends:` merges mappings key by key; the extending file wins; cycles are refused.",
            "- A target's `recipe` must name a recipe (or be `auto`); `select.order` and `select.fallback` must name targets.",
            "- A data set gives either `npz` or `synthetic`; its `inputs` must name declared inputs.",
            "- A static recipe needs a calibration data set (`calibration:`, default: the data set named `calibration`).",
            "- Each runtime refuses, before anything builds, sources and recipes it cannot build (see the README's support matrix).",
            "- Tolerances apply in this order, later wins: the defaults for the recipe family and the output's kind, "
            "`validate.default`, `validate.<recipe>`, the target's `validate`; at each level its general keys, then its "
            "`outputs.<name>` entry. The defaults are listed in docs/recipes.md.",
            "- Axes of outputs (`axis`, a part's `axis`) count the model's own output shape, batch axis included; "
            "negative axes count from the end. A classification output without `axis` must have exactly one axis "
            "longer than 1; nothing else is guessed.",
            "- Output declarations are checked against the real model at `source:` time: count and order (names for "
            "ONNX and TensorFlow sources), a declared `shape`/`dtype`, class axis against the `labels` file's line count "
            "and the data set's labels, detection parts inside their axis, a state output against its input's shape.",
            "- Output and input names may be any tensor name (quote names holding `:` or `/`); the bundle records a "
            "`safe_name` beside each.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    (ROOT / "docs" / "manifest.md").write_text(render())
    print("wrote docs/manifest.md")
