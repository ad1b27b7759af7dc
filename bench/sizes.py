"""Artifact sizes of built bundles, next to what their check measured: ``bench/sizes.py BUNDLE [BUNDLE ...]``.

Reads each bundle's bundle.json (the sizes and validations the build recorded; nothing is rebuilt) and
writes the "Sizes" section of bench/results.md: one row per variant, its size against the fp32 variant of
the same runtime, the check's status and accuracy, and the runtime it was validated on.
"""
from __future__ import annotations

import datetime
import json
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import write_section  # noqa: E402

TITLE = "Sizes: every variant of the example bundles, with what its check measured"


def rows(bundle: Path) -> list[str]:
    with zipfile.ZipFile(bundle) as zf:
        doc = json.loads(zf.read("bundle.json"))
    variants = doc["variants"]
    fp32 = {v["runtime"]: v["size_bytes"] for v in variants if v.get("recipe") == "fp32"}
    out = []
    for v in variants:
        val = v.get("validation") or {}
        metrics = next(iter((val.get("metrics") or {}).values()), {})
        acc = metrics.get("accuracy")
        base = fp32.get(v["runtime"])
        ratio = f"{v['size_bytes'] / base:.2f}x" if base else "n/a (no fp32 variant of this runtime)"
        out.append(f"| {doc['name']} | {v['id']} | {v['runtime']} | {v.get('recipe')} | {v['size_bytes']:,} | {ratio} | "
                   f"{val.get('status')} | {'' if acc is None else f'{acc:.2f} %'} | {val.get('runtime', '')} |")
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    table = ["| model | variant | runtime | recipe | bytes | vs fp32 of its runtime | check | accuracy | validated on |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in argv:
        table += rows(Path(path))
    note = (f"Read with `bench/sizes.py` on {datetime.date.today().isoformat()} from the bundles of clean builds of "
            "manifests/digits.yaml and manifests/digits-keras.yaml (README line 1). Accuracy is on the 360 real "
            "validation digits; Core ML variants are skipped on Linux (no accuracy).")
    write_section("\n".join(table), note, TITLE)
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
