"""JSON that mbuild writes is strict: NaN/Infinity refused, naming where they are."""
from __future__ import annotations


def test_json_out_is_strict():
    import math

    import pytest

    from mbuild._io import canonical_json

    assert canonical_json({"a": [1.5, 2]}) == '{\n  "a": [\n    1.5,\n    2\n  ]\n}\n'
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match=r"non-finite number at \$\.metrics\.cosine"):
            canonical_json({"metrics": {"cosine": bad}})
