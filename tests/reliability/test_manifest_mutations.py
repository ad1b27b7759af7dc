"""A deterministic generator of malformed manifests: every one is refused with file:line:col or loads cleanly.

Over 2,000 mutations of the digits manifest: wrong types at every key, deletions, NaN/inf, unicode
(lone surrogates, NUL, newlines, very long text), huge/negative/float shapes, long lists, YAML tags,
``extends`` chains, diamonds, symlinks, loops and FIFOs. The default suite runs a fixed sample; the
slow test runs them all. No mutation may raise anything but a located ManifestError, take over 5 s,
or load with a non-finite number anywhere (a NaN gate would silently pass every check).
"""
from __future__ import annotations

import copy
import math
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
import yaml

from mbuild.errors import ManifestError
from mbuild.manifest import load_manifest
from tests.conftest import DIGITS_CPU, make_project

BASE = yaml.safe_load(DIGITS_CPU)
LOCATED = re.compile(r"^\S[^\n]*?\.yaml:(\d+):(\d+): ")
SAMPLE = 300
HANG_S = 5

BAD_VALUES = [None, True, False, 0, -1, 1.5, -0.0, 10**30, -(10**30), float("nan"), float("inf"), float("-inf"),
              "", "x", "\ud800", "a\0b", "name\n", "é" * 3, "x" * 5000, [], [None], [float("nan")], list(range(300)),
              {}, {"k": 1}, {"nan": float("nan")}, [[1, 2], [3]], "1.0.0\n", "../../../etc/passwd", "\udcff.npz",
              -(2**63), "yes", "0x10", "\u202e\u200b"]
SHAPES = [[], [0], [-1], [1.0, 1, 8, 8], [1, 1, 8, 8.5], [10**12] * 4, [2**31, 2**31], [1] * 9, [[1]], ["1"],
          [float("nan")], [float("inf"), 1], [True, 1, 8, 8], [1, 1, 8, 8] * 50]
TAGS = ["!!int", "!!float", "!!bool", "!!str", "!!binary", "!!set", "!!timestamp", "!!omap", "!!python/name:os.system",
        "!!python/object/apply:os.system", "!custom", "!!null", "!<tag:yaml.org,2002:int>"]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _set(data, path, value):
    node = data
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value


def _dump(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=False, width=10**6)


def mutations() -> list[tuple[str, dict]]:
    """(id, {'text' or 'data': the manifest, 'files': {relative path: text | 'FIFO' | ('symlink', target)}})."""
    out: list[tuple[str, dict]] = []
    paths = [p for p in _paths(BASE) if p]
    for p in paths:
        data = copy.deepcopy(BASE)
        node = data
        for k in p[:-1]:
            node = node[k]
        del node[p[-1]]
        out.append((f"del:{p}", {"data": data}))
        for i, v in enumerate(BAD_VALUES):
            data = copy.deepcopy(BASE)
            _set(data, p, v)
            out.append((f"set:{p}={i}", {"data": data}))
    for i, shape in enumerate(SHAPES):
        for key in ("shape", "shapes"):
            data = copy.deepcopy(BASE)
            data["inputs"]["image"][key] = shape if key == "shape" else [shape]
            out.append((f"{key}:{i}", {"data": data}))
    lines = DIGITS_CPU.splitlines()
    for n, line in enumerate(lines):
        if ": " not in line:
            continue
        key, _, value = line.partition(": ")
        for tag in TAGS:
            out.append((f"tag:{n}:{tag}", {"text": "\n".join(lines[:n] + [f"{key}: {tag} {value}"] + lines[n + 1:]) + "\n"}))
        for junk in ("\t", "\\ud800", "\"\\ud800\"", "\"\\0\"", "&a", "*a", "{", "]", "'", "<<: {}", "? [x]"):
            out.append((f"junk:{n}:{junk}", {"text": "\n".join(lines[:n] + [f"{key}: {junk}"] + lines[n + 1:]) + "\n"}))
    for count in (100, 3000):
        data = copy.deepcopy(BASE)
        data["targets"].update({f"t{i}": {"runtime": "onnxruntime", "recipe": "nope"} for i in range(count)})
        out.append((f"many-targets:{count}", {"data": data}))
        data = copy.deepcopy(BASE)
        data["inputs"].update({f"in{i}": {"shape": [1]} for i in range(count)})
        out.append((f"many-inputs:{count}", {"data": data}))
    out.extend(_extends_cases())
    return out


def _extends_cases() -> list[tuple[str, dict]]:
    rest = DIGITS_CPU
    cases = []
    for depth in (1, 5, 9, 12):
        files = {"b0.yaml": rest}
        for i in range(1, depth):
            files[f"b{i}.yaml"] = f"extends: b{i - 1}.yaml\n"
        cases.append((f"chain:{depth}", {"text": f"extends: b{depth - 1}.yaml\n", "files": files}))
    for width in (2, 3):
        for depth in (2, 4, 6):
            files = {"d0.yaml": rest}
            for i in range(1, depth):
                files[f"d{i}.yaml"] = "extends: [" + ", ".join([f"d{i - 1}.yaml"] * width) + "]\n"
            cases.append((f"diamond:{width}x{depth}", {"text": f"extends: d{depth - 1}.yaml\n", "files": files}))
    cases += [
        ("self", {"text": "extends: mutated.yaml\n" + rest}),
        ("cycle", {"text": "extends: c1.yaml\n", "files": {"c1.yaml": "extends: c2.yaml\n", "c2.yaml": "extends: c1.yaml\n"}}),
        ("symlink-base", {"text": "extends: link.yaml\n", "files": {"real.yaml": rest, "link.yaml": ("symlink", "real.yaml")}}),
        ("symlink-loop", {"text": "extends: loop.yaml\n", "files": {"loop.yaml": ("symlink", "loop.yaml")}}),
        ("symlink-outside", {"text": "extends: out.yaml\n", "files": {"out.yaml": ("symlink", "/etc/hostname")}}),
        ("fifo-base", {"text": "extends: pipe.yaml\n" + rest, "files": {"pipe.yaml": "FIFO"}}),
        ("folder-base", {"text": "extends: sub\n" + rest, "files": {"sub/x.yaml": rest}}),
        ("missing-base", {"text": "extends: nope.yaml\n" + rest}),
        ("nul-base", {"text": "extends: \"a\\0.yaml\"\n" + rest}),
        ("surrogate-base", {"text": "extends: \"\\ud800.yaml\"\n" + rest}),
        ("long-base", {"text": "extends: " + "x" * 300 + ".yaml\n" + rest}),
        ("base-list-types", {"text": "extends: [1, null]\n" + rest}),
        ("base-nan", {"text": "extends: n.yaml\n", "files": {"n.yaml": rest.replace("cosine_min: 0.99", "cosine_min: .nan")}}),
        ("base-not-mapping", {"text": "extends: l.yaml\n" + rest, "files": {"l.yaml": "- 1\n- 2\n"}}),
        ("empty", {"text": ""}),
        ("fifo-npz", {"text": rest.replace("../examples/digits/val.npz", "pipe.npz"), "files": {"pipe.npz": "FIFO"}}),
        ("fifo-weights", {"text": rest.replace("../examples/digits/weights.pt", "pipe.pt"), "files": {"pipe.pt": "FIFO"}}),
    ]
    return cases


ALL = mutations()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("mutations"), {"digits.yaml": DIGITS_CPU}) / "manifests"


def _place(folder: Path, case: dict) -> list[Path]:
    made = []
    for rel, content in case.get("files", {}).items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content == "FIFO":
            os.mkfifo(p)
        elif isinstance(content, tuple):
            p.symlink_to(content[1])
        else:
            p.write_text(content)
        made.append(p)
    text = case["text"] if "text" in case else _dump(case["data"])  # dumped only when run: the full set is slow to dump
    (folder / "mutated.yaml").write_bytes(text.encode("utf-8", "surrogatepass"))
    return made


def _finite(node) -> bool:
    if isinstance(node, float):
        return math.isfinite(node)
    if isinstance(node, dict):
        return all(_finite(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return all(_finite(v) for v in node)
    return True


def _hang(signum, frame):
    raise TimeoutError(f"a mutation took more than {HANG_S} s")


def _run(folder: Path, cases) -> dict:
    counts = {"refused": 0, "loaded": 0}
    old = signal.signal(signal.SIGALRM, _hang)
    try:
        for case_id, case in cases:
            made = _place(folder, case)
            start = time.monotonic()
            signal.alarm(HANG_S)
            try:
                m = load_manifest(folder / "mutated.yaml")
            except ManifestError as e:
                lines = str(e).splitlines()
                assert lines and all(LOCATED.match(line) for line in lines), (case_id, str(e))
                counts["refused"] += 1
            except BaseException as e:
                raise AssertionError(f"{case_id}: {type(e).__name__}: {e}") from e
            else:
                assert _finite(m.raw), f"{case_id}: a non-finite number was accepted"
                counts["loaded"] += 1
            finally:
                signal.alarm(0)
                for p in made:
                    p.unlink()
            assert time.monotonic() - start < HANG_S, case_id
    finally:
        signal.signal(signal.SIGALRM, old)
    return counts


def test_the_generator_makes_enough_mutations():
    assert len(ALL) >= 2000, len(ALL)
    assert len({case_id for case_id, _ in ALL}) == len(ALL)


def test_a_sample_of_mutations_is_refused_with_a_location(folder):
    cases = random.Random(15).sample(ALL, SAMPLE)
    counts = _run(folder, cases)
    assert counts["refused"] > SAMPLE // 2, counts


@pytest.mark.slow
def test_every_mutation_is_refused_with_a_location(folder):
    counts = _run(folder, ALL)
    assert counts["refused"] > len(ALL) // 2, counts
