"""Cache settings (files, environment, mistakes) and the store's rules, on a real file:// cache (no build)."""
from __future__ import annotations

import hashlib
import json
import time

import pytest

from mbuild.cache.config import CacheConfig, CacheConfigError, load_cache_config
from mbuild.cache.maintenance import prune_cache, verify_cache
from mbuild.cache.store import CacheStore, CorruptBlobError, ReadOnlyCacheError


def test_settings_come_from_pyproject_or_mbuild_toml_and_the_environment_wins(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.mbuild.cache]\nurl = "s3://team/cache"\n'
                                             '[tool.mbuild.cache.storage_options]\nanon = false\n')
    c = load_cache_config(tmp_path, {})
    assert (c.url, c.mode, c.storage_options) == ("s3://team/cache", "read-only", {"anon": False})  # read-only default
    (tmp_path / "mbuild.toml").write_text('[cache]\nurl = "file:///srv/cache"\nmode = "read-write"\n')
    assert load_cache_config(tmp_path, {}).url == "file:///srv/cache"  # mbuild.toml first
    env = {"MBUILD_CACHE_URL": "gs://ci/cache", "MBUILD_CACHE_MODE": "read-only", "MBUILD_CACHE_ENDPOINT_URL": "http://x"}
    c = load_cache_config(tmp_path, env)
    assert (c.url, c.mode, c.storage_options, c.source) == ("gs://ci/cache", "read-only", {"endpoint_url": "http://x"},
                                                            "MBUILD_CACHE_URL")
    assert load_cache_config(tmp_path, {"MBUILD_CACHE": "off"}) is None
    assert load_cache_config(tmp_path / "nowhere", {}) is None  # no cache configured: the hooks do nothing


def test_setting_mistakes_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "mbuild.toml").write_text('[cache]\nurl = "file:///c"\nmod = "read-write"\n')
    with pytest.raises(CacheConfigError, match=r"mbuild.toml: \[cache\]: unknown key 'mod'; did you mean 'mode'"):
        load_cache_config(tmp_path, {})
    (tmp_path / "mbuild.toml").write_text('[cache]\nurl = "file:///c"\nmode = "rw"\n')
    with pytest.raises(CacheConfigError, match="cache mode 'rw' is not one of read-only, read-write"):
        load_cache_config(tmp_path, {})


def _store(tmp_path, mode="read-write") -> CacheStore:
    return CacheStore(CacheConfig(url=(tmp_path / "cache").as_uri(), mode=mode))


def test_blobs_are_checked_on_read_and_read_only_never_writes(tmp_path):
    rw = _store(tmp_path)
    sha = rw.put_blob(b"weights")
    assert sha == hashlib.sha256(b"weights").hexdigest() and rw.get_blob(sha) == b"weights"
    (tmp_path / "cache" / "cas" / sha[:2] / sha).write_bytes(b"weightz")
    with pytest.raises(CorruptBlobError, match="corrupt or tampered with"):
        rw.get_blob(sha)
    ro = _store(tmp_path, "read-only")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "cache").rglob("*"))
    for write in (lambda: ro.put_blob(b"new"), lambda: ro.put_entry({"key": "k" * 64}),
                  lambda: ro.put_duration("variant:m/t", 1.0)):
        with pytest.raises(ReadOnlyCacheError, match="read-only here"):
            write()
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "cache").rglob("*")) == before


def test_verify_finds_corrupt_and_missing_blobs_and_prune_drops_old_entries(tmp_path):
    rw = _store(tmp_path)
    good, bad = rw.put_blob(b"good"), rw.put_blob(b"bad")
    now = time.time()
    rw.put_entry({"format": "mbuild-cache/1", "key": "a" * 64, "task": "variant:m/a", "created": now,
                  "files": {"build/m/a": {"sha256": good, "size": 4}}})
    rw.put_entry({"format": "mbuild-cache/1", "key": "b" * 64, "task": "variant:m/b", "created": now - 90 * 86400,
                  "files": {"build/m/b": {"sha256": bad, "size": 3}}})
    assert verify_cache(rw) == []
    (tmp_path / "cache" / "cas" / bad[:2] / bad).write_bytes(b"BAD")
    problems = verify_cache(rw)
    assert len(problems) == 2 and "corrupt" in problems[0] and "variant:m/b" in problems[1]
    assert prune_cache(rw, 30, dry_run=True)["entries_removed"] == 1 and rw.get_entry("b" * 64)  # dry run keeps it
    result = prune_cache(rw, 30)
    assert (result["entries_removed"], result["blobs_removed"]) == (1, 1)
    assert rw.get_entry("b" * 64) is None and rw.get_entry("a" * 64) and verify_cache(rw) == []
    assert json.loads((tmp_path / "cache" / "ac" / "aa" / f"{'a' * 64}.json").read_text())["task"] == "variant:m/a"


def test_an_entry_naming_a_file_outside_the_task_outputs_is_refused(tmp_path):
    from mbuild.cache.hook import restore_entry
    from mbuild.manifest import load_manifest
    from tests.conftest import DIGITS_CPU, make_project

    project = make_project(tmp_path / "p", {"digits.yaml": DIGITS_CPU})
    manifest = load_manifest(project / "manifests" / "digits.yaml")
    rw = _store(tmp_path)
    sha = rw.put_blob(b"#!/bin/sh\n")
    entry = {"key": "c" * 64, "files": {"build/digits-cnn/targets/cpu-fp32/variant/../../../../../dodo.py":
                                        {"sha256": sha, "size": 10}}}
    dodo = (project / "dodo.py").read_bytes()
    with pytest.raises(CorruptBlobError, match="outside build/digits-cnn/targets/cpu-fp32/variant"):
        restore_entry(rw, manifest, "variant", "cpu-fp32", entry)
    assert (project / "dodo.py").read_bytes() == dodo
