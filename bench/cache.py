"""Shared cache on a real S3 API (moto's server on localhost): copy A builds and pushes, empty copy B restores.

`.venv/bin/python bench/cache.py [--runs N]` -> the "Shared cache" section of bench/results.md (other
sections are kept). Reuses the fixtures of tests/cache/conftest.py; about 2 minutes per run on 2 cores.
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import fmt, machine, stats  # noqa: E402

from tests.cache.conftest import BUNDLE, _free_port, cache_project, events, make_bucket, timed_doit  # noqa: E402

TITLE = "Shared cache: build + push (A) vs restore into an empty copy (B), S3 API on localhost"


def _moto():
    import os
    import socket
    import subprocess
    import time

    from tests.cache.conftest import CREDENTIALS

    os.environ.update(CREDENTIALS)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("moto server did not start")


def run(runs: int) -> dict:
    proc, endpoint = _moto()
    work = Path(tempfile.mkdtemp(prefix="mbuild-cache-bench."))
    a_times, b_times, same, restored, pushed = [], [], [], [], []
    try:
        for i in range(runs):
            url = make_bucket(endpoint, f"bench{i}")
            a = cache_project(work / f"a{i}", url, endpoint, mode="read-write")
            b = cache_project(work / f"b{i}", url, endpoint)
            a_times.append(timed_doit(a)[1])
            b_times.append(timed_doit(b)[1])
            same.append((a / BUNDLE).read_bytes() == (b / BUNDLE).read_bytes())
            pushed.append(sum(e["event"] == "pushed" for e in events(a)))
            log = events(b)
            restored.append((sum(e["event"] == "restored" for e in log), sum(e["event"] == "ran" for e in log)))
    finally:
        proc.terminate()
        shutil.rmtree(work, ignore_errors=True)
    return {"a": stats(a_times), "b": stats(b_times), "same": all(same), "restored": restored, "pushed": pushed}


def table(r: dict) -> str:
    hits = ", ".join(f"{h} restored / {n} ran" for h, n in r["restored"])
    return "\n".join([
        f"Measured {datetime.date.today().isoformat()} on {machine()}; `tests/conftest.py` DIGITS_CPU "
        "(digits CNN, ONNX Runtime fp32 + static int8), moto S3 server on localhost, `.venv/bin/python bench/cache.py`.",
        "",
        "| measurement | wall time | notes |",
        "|---|---|---|",
        f"| A: cold `doit`, read-write cache (build + push) | {fmt(r['a'], digits=1)} | tasks pushed: "
        f"{', '.join(map(str, r['pushed']))}; bundle built |",
        f"| B: `doit` in an empty copy, read-only cache (restore) | {fmt(r['b'], digits=1)} | cached tasks: {hits}; "
        f"bundle byte-identical to A's: {'yes' if r['same'] else 'NO'} |",
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=1)
    r = run(p.parse_args().runs)
    text = table(r)
    print(text)
    path = ROOT / "bench" / "results.md"
    old = path.read_text() if path.exists() else "# mbuild bench results\n"
    parts = old.rstrip("\n").split("\n## ")
    kept = [x for x in parts[1:] if not x.startswith(TITLE.split(":")[0] + ":")]
    path.write_text("\n## ".join([parts[0], *kept]).rstrip("\n") + f"\n\n## {TITLE}\n\n{text}\n")
    print("updated bench/results.md")
    return 0 if r["same"] else 1


if __name__ == "__main__":
    sys.exit(main())
