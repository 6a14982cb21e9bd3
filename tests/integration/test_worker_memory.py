"""What keeps a web worker small (bench/README.md has the figures): heavy imports stay out, and
argon2's working memory goes back to the system once hashing is quiet.

Each check runs in a fresh interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ROOT
from tests.support.settings import base_config


def _run(code: str, tmp_path: Path, **env: str) -> dict:
    environment = {
        **base_config(),
        "DATABASE_URL": f"sqlite:///{tmp_path}/worker.db",
        "PATH": "/usr/bin:/bin",
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_web_worker_without_redis_imports_neither_alembic_nor_redis(tmp_path):
    modules = _run(
        "import json, sys, wsgi; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))",
        tmp_path,
    )
    for heavy in ("alembic", "flask_migrate", "mako", "redis", "psycopg"):
        assert heavy not in modules, heavy


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_argon2_memory_is_handed_back_after_a_quiet_second(tmp_path):
    """Four concurrent default-cost hashes need 4 x 19 MiB. Requests keep allocating meanwhile,
    which pins the top of the heap, so free() alone returns nothing (+40 MB here without the
    trim); a quiet second later it is back to the start plus what the requests kept."""
    code = """
import ctypes, json, threading, time
libc = ctypes.CDLL(None)  # as gunicorn.conf.py sets them in the master:
libc.mallopt(-8, 1)  # M_ARENA_MAX
libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
libc.mallopt(-1, 512 * 1024 * 1024)  # M_TRIM_THRESHOLD
from authsvc.security.passwords import PasswordHasher
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
start = rss()
hasher = PasswordHasher(memory_kib=19456, time_cost=2, parallelism=1)
stored = hasher.hash("correct horse battery staple")
kept = []
def verify():
    for _ in range(3):
        hasher.verify_and_update("correct horse battery staple", stored)
        kept.append(bytearray(200_000))  # a request's leftovers, allocated after the hash
threads = [threading.Thread(target=verify) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
time.sleep(2.0)
print(json.dumps({"start": start, "after": rss(), "kept": len(kept) * 200_000 / 2**20}))
"""
    sizes = _run(code, tmp_path)
    assert sizes["after"] - sizes["start"] < sizes["kept"] + 6, sizes
