"""``mbuild build --shard I/N``: a deterministic, balanced split; two shard jobs and a bundle job on S3."""
from __future__ import annotations

import json

from mbuild.cache.shard import parse_shard, shard_tasks, split
from mbuild.tasks import load_project
from tests.cache.conftest import BUNDLE, CACHED, cache_project, events, make_bucket, run_in, timed_doit
from tests.conftest import DIGITS_CPU, make_project


def test_split_is_deterministic_and_balanced_by_cost():
    units = [f"m/t{i}" for i in range(7)]
    costs = {"m/t0": 60.0, "m/t1": 10.0, "m/t2": 10.0, "m/t3": 10.0, "m/t4": 10.0, "m/t5": 10.0}
    shards = split(units, costs, 2)
    assert shards == split(list(reversed(units)), costs, 2)  # the order tasks are listed in does not matter
    assert sorted(u for s in shards for u in s) == sorted(units)  # each target exactly once
    loads = [sum(costs.get(u, 20.0) for u in s) for s in shards]  # m/t6 costs the mean of the known: 110/6
    assert max(loads) - min(loads) <= 20.0
    assert ["m/t0"] in [s[:1] for s in shards] and len(next(s for s in shards if "m/t0" in s)) <= 2
    assert split(units, {}, 3) == [["m/t0", "m/t3", "m/t6"], ["m/t1", "m/t4"], ["m/t2", "m/t5"]]  # untimed: by count


def test_shard_uses_recorded_durations(tmp_path):
    project = make_project(tmp_path / "p", {"digits.yaml": DIGITS_CPU})
    (project / ".mbuild").mkdir(exist_ok=True)
    (project / ".mbuild" / "durations.json").write_text(json.dumps({
        "variant:digits-cnn/cpu-fp32": 1.0, "check:digits-cnn/cpu-fp32": 1.0,
        "variant:digits-cnn/cpu-int8": 30.0, "check:digits-cnn/cpu-int8": 5.0}))
    names, costs = shard_tasks(load_project(project), 1, 2)
    assert names == ["variant:digits-cnn/cpu-int8", "check:digits-cnn/cpu-int8"] and costs == {"digits-cnn/cpu-int8": 35.0}
    assert shard_tasks(load_project(project), 2, 2)[0] == ["variant:digits-cnn/cpu-fp32", "check:digits-cnn/cpu-fp32"]
    for bad in ("0/2", "3/2", "1-2", ""):
        try:
            parse_shard(bad)
        except Exception as e:  # noqa: BLE001
            assert "expected I/N" in str(e)
        else:
            raise AssertionError(f"--shard {bad!r} was accepted")


def test_two_shards_then_a_bundle_job_give_the_full_build_bundle(pushed, s3_endpoint, tmp_path):
    """Shard jobs on two copies push to an empty bucket; a third copy packages it with no conversion."""
    url = make_bucket(s3_endpoint, "sharded")
    ran = {}
    for i in (1, 2):  # one after the other: the test machine takes one build at a time (CI runs them at once)
        shard = cache_project(tmp_path / f"shard{i}", url, s3_endpoint, mode="read-write")
        proc = run_in(shard, "mbuild", "build", "--shard", f"{i}/2")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert not (shard / BUNDLE).exists()  # a shard packages nothing
        ran[i] = {e["task"] for e in events(shard) if e["event"] == "ran"}
        assert f"shard {i}/2: digits-cnn/" in proc.stdout
    targets = [{t.split("/")[1] for t in ran[i] if t.startswith("variant:")} for i in (1, 2)]
    assert sorted(map(len, targets)) == [1, 1] and targets[0] != targets[1]  # one target each, none twice
    assert "source:digits-cnn" in ran[1]
    # the source built independently by shard 1 is byte-identical to A's: parallel shards converge on one key
    a_source = pushed["project"] / "build/digits-cnn/source"
    for f in a_source.rglob("*"):
        if f.is_file():
            assert (tmp_path / "shard1" / f.relative_to(pushed["project"])).read_bytes() == f.read_bytes(), f

    job = cache_project(tmp_path / "bundle-job", url, s3_endpoint)  # read-only
    proc, _ = timed_doit(job, MBUILD_CACHE_ON_MISS="fail")  # as in ci/: a miss fails the job, it never converts
    log = events(job)
    assert {e["task"] for e in log if e["event"] == "restored"} == CACHED
    assert not [e for e in log if e["event"] == "ran"], log  # no variant (or any cached) task ran here
    assert (job / BUNDLE).read_bytes() == pushed["bundle"]


def test_a_shard_with_no_target_builds_nothing(tmp_path):
    project = make_project(tmp_path / "p", {"digits.yaml": DIGITS_CPU})
    proc = run_in(project, "mbuild", "build", "--shard", "3/3")  # 2 targets over 3 shards: the third is empty
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "shard 3/3: no targets" in proc.stdout and not (project / "build").exists()
    bad = run_in(project, "mbuild", "build", "--shard", "4/3")
    assert bad.returncode == 1 and "expected I/N with 1 <= I <= N" in bad.stderr and "Traceback" not in bad.stderr


def test_shard_durations_come_from_the_cache_when_this_checkout_has_none(tmp_path):
    from mbuild.cache.config import CacheConfig
    from mbuild.cache.store import CacheStore

    url = (tmp_path / "cache").as_uri()
    store = CacheStore(CacheConfig(url=url, mode="read-write"))
    for name, seconds in {"variant:digits-cnn/cpu-fp32": 40.0, "check:digits-cnn/cpu-fp32": 2.0,
                          "variant:digits-cnn/cpu-int8": 3.0, "check:digits-cnn/cpu-int8": 2.0}.items():
        store.put_duration(name, seconds)
    project = make_project(tmp_path / "p", {"digits.yaml": DIGITS_CPU})
    (project / "mbuild.toml").write_text(f'[cache]\nurl = "{url}"\n')  # read-only: reading durations is enough
    names, costs = shard_tasks(load_project(project), 1, 2)
    assert costs == {"digits-cnn/cpu-fp32": 42.0} and names[0] == "variant:digits-cnn/cpu-fp32"
