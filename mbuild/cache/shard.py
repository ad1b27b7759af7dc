"""``--shard I/N``: a deterministic, balanced share of the ``variant:``/``check:`` tasks for one CI job.

A target's variant and check stay together (the check needs the variant). Targets are dealt
longest first to the least loaded shard (LPT), costed by the durations recorded on earlier
builds (.mbuild/durations.json, then the cache's durations/); a target never timed costs the
mean of those that were. Every shard computes the same split from the same inputs.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from mbuild.errors import MbuildError


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise MbuildError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. --shard 1/4")
    return int(m.group(1)), int(m.group(2))


def known_durations(root: Path, names: list[str]) -> dict[str, float]:
    """Recorded seconds per task name: this checkout's, else the shared cache's."""
    local = Path(root) / ".mbuild" / "durations.json"
    try:
        found = {k: float(v) for k, v in json.loads(local.read_text()).items()} if local.exists() else {}
    except ValueError:
        found = {}
    missing = [n for n in names if n not in found]
    if missing:
        from mbuild.cache.config import load_cache_config

        config = load_cache_config(Path(root))
        if config is not None:
            from mbuild.cache.store import open_store

            try:
                store = open_store(config)
                for n in missing:
                    seconds = store.get_duration(n)
                    if seconds is not None:
                        found[n] = seconds
            except Exception as e:  # noqa: BLE001 - without durations the split is by count
                print(f"warning: shard: cannot read durations from {config.url}: {e}")
    return found


def split(units: list[str], costs: dict[str, float], shards: int) -> list[list[str]]:
    """Longest-processing-time-first: sort by (-cost, name), give each to the shard with the least load."""
    known = [costs[u] for u in units if u in costs]
    default = sum(known) / len(known) if known else 1.0
    loads = [0.0] * shards
    out: list[list[str]] = [[] for _ in range(shards)]
    for unit in sorted(units, key=lambda u: (-costs.get(u, default), u)):
        i = min(range(shards), key=lambda k: (loads[k], k))
        out[i].append(unit)
        loads[i] += costs.get(unit, default)
    return [sorted(s) for s in out]


def shard_tasks(project, index: int, count: int) -> tuple[list[str], dict[str, float]]:
    """The doit task names of shard ``index`` of ``count`` and the estimated seconds of each target."""
    units = [f"{m.name}/{t}" for m in project.manifests for t in m.targets]
    names = [f"{step}:{u}" for u in units for step in ("variant", "check")]
    durations = known_durations(project.root, names)
    costs = {u: durations[f"variant:{u}"] + durations[f"check:{u}"] for u in units
             if f"variant:{u}" in durations and f"check:{u}" in durations}
    mine = split(units, costs, count)[index - 1]
    return [f"{step}:{u}" for u in mine for step in ("variant", "check")], {u: costs.get(u) for u in mine}
