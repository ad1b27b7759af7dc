"""Sequences: decode the reference's and the variant's outputs (CTC or argmax) and compare the decoded tokens."""
from __future__ import annotations

import numpy as np

from mbuild.validate.metrics import array_axis


def decode(arr: np.ndarray, vocab_axis: int, time_axis: int, method: str, blank: int | None) -> list[list[int]]:
    """Token ids per sample; ``vocab_axis``/``time_axis`` are model axes of [samples, *shape] arrays."""
    nd = arr.ndim - 1
    va, ta = array_axis(vocab_axis, nd), array_axis(time_axis, nd)
    ids = np.argmax(np.asarray(arr), axis=va)  # [samples, ...] with the time axis left
    ta = ta if ta < va else ta - 1
    ids = np.moveaxis(ids, ta, 1).reshape(len(arr), -1)
    out = []
    for row in ids:
        seq = []
        prev = None
        for t in row.tolist():
            if method == "ctc":
                if t != prev and t != blank:
                    seq.append(t)
                prev = t
            elif t != blank:
                seq.append(t)
        out.append(seq)
    return out


def edit_distance(a: list[int], b: list[int]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def sequence_metrics(ref: np.ndarray, out: np.ndarray, vocab_axis: int, time_axis: int, method: str,
                     blank: int | None) -> dict:
    """Exact-match rate and character (token) error rate of the variant's decoding against the reference's."""
    if method == "ctc" and blank is None:
        blank = 0
    r = decode(ref, vocab_axis, time_axis, method, blank)
    o = decode(out, vocab_axis, time_axis, method, blank)
    exact = [a == b for a, b in zip(r, o)]
    total = sum(len(a) for a in r)
    errors = sum(edit_distance(a, b) for a, b in zip(r, o))
    worst = int(np.argmin([1.0 if not a else 1 - edit_distance(a, b) / len(a) for a, b in zip(r, o)])) if r else None
    result = {"exact_match": float(np.mean(exact)) if exact else None,
              "cer": errors / total if total else None,
              "tokens": total, "worst_sample": worst,
              "empty_reference_samples": sum(1 for a in r if not a)}
    if worst is not None:
        result["worst_tokens"] = {"reference": r[worst][:MAX_SHOWN], "variant": o[worst][:MAX_SHOWN]}
    return result


MAX_SHOWN = 64
