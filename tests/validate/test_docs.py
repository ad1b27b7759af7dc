"""The documented defaults and manifest reference are the code's, not a copy that drifts."""
from __future__ import annotations

import importlib.util

from mbuild.validate.defaults import FAMILIES, TASK, TENSOR
from tests.conftest import REPO


def test_recipes_doc_lists_every_default_tolerance():
    text = (REPO / "docs" / "recipes.md").read_text()
    for per in (TENSOR, *TASK.values()):
        for family in FAMILIES:
            if family in per:
                assert "| " + family + " | " + ", ".join(f"`{k}` {v:g}" for k, v in per[family].items()) + " |" in text


def test_manifest_reference_is_generated_from_the_schema():
    spec = importlib.util.spec_from_file_location("schema_docs", REPO / "scripts" / "schema_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (REPO / "docs" / "manifest.md").read_text() == module.render(), "run: python scripts/schema_docs.py"


def test_manifest_reference_documents_nested_keys():
    text = (REPO / "docs" / "manifest.md").read_text()
    for section in ("### `source.pytorch`", "### `source.pytorch.weights`", "### `input.image`",
                    "### `dataset.synthetic`", "### `recipe.palettize`"):
        assert section in text, section
    assert "| `model` (required) |" in text and "| `strict` |" in text
