"""A real S3 API on localhost (moto's server, in its own process) and project copies that use it as cache."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DIGITS_CPU, make_project

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """http://127.0.0.1:PORT of a moto S3 server started for this test session (stopped at its end)."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **CREDENTIALS})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited ({proc.returncode}); see {log.name}") from None
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start within 60 s")
    for k, v in CREDENTIALS.items():
        os.environ.setdefault(k, v)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def s3fs_for(endpoint: str):
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing", use_listings_cache=False)


def make_bucket(endpoint: str, name: str) -> str:
    s3fs_for(endpoint).mkdir(name)
    return f"s3://{name}/mbuild"


def bucket_listing(endpoint: str, bucket: str) -> dict[str, tuple]:
    """Every object of the bucket with its size and ETag: equal listings mean nothing was written."""
    fs = s3fs_for(endpoint)
    fs.invalidate_cache()
    return {k: (v.get("size"), v.get("ETag")) for k, v in fs.find(bucket, detail=True).items()}


def cache_project(root: Path, url: str, endpoint: str, mode: str | None = None,
                  manifest: str = DIGITS_CPU) -> Path:
    """A digits project whose mbuild.toml names the S3 cache (mode left to the default unless given)."""
    project = make_project(root, {"digits.yaml": manifest})
    lines = ["[cache]", f'url = "{url}"'] + ([f'mode = "{mode}"'] if mode else [])
    lines += ["[cache.storage_options]", f'endpoint_url = "{endpoint}"']
    (project / "mbuild.toml").write_text("\n".join(lines) + "\n")
    return project


def run_in(project: Path, *argv: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """A command in the project (doit or mbuild) with the test credentials; raises with its output on failure."""
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=project, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **CREDENTIALS, **(env or {})})
    return proc


def events(project: Path) -> list[dict]:
    import json

    log = project / ".mbuild" / "cache-log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


BUNDLE = "dist/digits-cnn-1.0.0.mbundle"
CACHED = {"source:digits-cnn", "convert:digits-cnn/onnxruntime-prepared", "convert:digits-cnn/onnxruntime-opset13",
          "variant:digits-cnn/cpu-fp32", "variant:digits-cnn/cpu-int8",
          "check:digits-cnn/cpu-fp32", "check:digits-cnn/cpu-int8"}


def timed_doit(project: Path, *args: str, **env) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = run_in(project, "doit", *args, env=env)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, seconds


@pytest.fixture(scope="session")
def pushed(s3_endpoint, tmp_path_factory):
    """Copy A: DIGITS_CPU built once in read-write mode; its cache URL, bucket, wall time and output."""
    url = make_bucket(s3_endpoint, "shared")
    a = cache_project(tmp_path_factory.mktemp("a"), url, s3_endpoint, mode="read-write")
    proc, seconds = timed_doit(a)
    return {"project": a, "url": url, "bucket": "shared", "seconds": seconds, "stdout": proc.stdout,
            "bundle": (a / BUNDLE).read_bytes()}


@pytest.fixture(scope="session")
def restored(pushed, s3_endpoint, tmp_path_factory):
    """Copy B: empty, read-only (the default), built by `doit` from A's cache; the bucket listed before and after.

    Its bundle bytes are kept here: a later test merges a host record into B's bundle.
    """
    before = bucket_listing(s3_endpoint, pushed["bucket"])
    b = cache_project(tmp_path_factory.mktemp("b"), pushed["url"], s3_endpoint)
    proc, seconds = timed_doit(b)
    return {"project": b, "seconds": seconds, "stdout": proc.stdout, "before": before,
            "after": bucket_listing(s3_endpoint, pushed["bucket"]), "bundle": (b / BUNDLE).read_bytes()}
