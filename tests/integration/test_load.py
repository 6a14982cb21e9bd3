"""bench/load.py, briefly, against a real gunicorn: on SQLite, and on PostgreSQL + Redis.

The script itself verifies the service (no 5xx, every account created can log in, every
logged-out session is dead); this asserts its exit status and that it did exercise every endpoint.
Everything stays on 127.0.0.1 and is bounded: 4 clients, 8 seconds, a request cap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.support.servers import ROOT, authsvc_gunicorn, free_port
from tests.support.settings import TABLES, TEST_SECRET

pytestmark = pytest.mark.slow

LOAD_SCRIPT = ROOT / "bench" / "load.py"
CLIENTS, SECONDS, MAX_REQUESTS = 4, 8, 20_000


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = {
        **os.environ,
        "AUTHSVC_ENV": "production",
        "AUTHSVC_SECRET_KEY": TEST_SECRET,
        "AUTHSVC_ISSUER": f"http://127.0.0.1:{port}",
        "AUTHSVC_ARGON2_MEMORY_KIB": "1024",
        "AUTHSVC_ARGON2_TIME_COST": "1",
        "AUTHSVC_RATELIMIT_ENABLED": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    (tmp_path / "metrics").mkdir()
    if request.param == "sqlite":
        # The embedded default's shape: a SQLite file, no Redis, one process (4 threads).
        env.update(DATABASE_URL=f"sqlite:///{tmp_path}/authsvc.db")
        env.pop("REDIS_URL", None)
        env.pop("WEB_CONCURRENCY", None)
    else:
        database = request.getfixturevalue("postgres_url")
        redis_url = request.getfixturevalue("redis_url")
        env.update(DATABASE_URL=database, REDIS_URL=redis_url, WEB_CONCURRENCY="2")
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
        redis.Redis.from_url(redis_url).flushdb()
    log_path = tmp_path / "gunicorn.log"
    with authsvc_gunicorn(env, port, log_path) as base_url:
        yield base_url, log_path


def run_load(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(LOAD_SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_load(server: tuple[str, Path], tmp_path: Path) -> None:
    base_url, log_path = server
    summary_path = tmp_path / "summary.json"
    result = run_load(
        *("--url", base_url, "--clients", str(CLIENTS), "--seconds", str(SECONDS)),
        *("--max-requests", str(MAX_REQUESTS), "--summary-json", str(summary_path)),
    )
    report = f"{result.stdout}\n{result.stderr}\n--- gunicorn log (tail) ---\n"
    report += "\n".join(log_path.read_text().splitlines()[-40:])
    assert result.returncode == 0, report
    print(result.stdout)

    summary = json.loads(summary_path.read_text())
    assert summary["violations"] == 0, report
    assert 0 < summary["load_requests"] <= MAX_REQUESTS
    for endpoint in ("POST /signup", "POST /login", "POST /refresh", "GET /me", "POST /logout"):
        assert summary["endpoints"][f"load {endpoint}"]["requests"] > 0, (endpoint, report)
    # The verification ran, on everything: each account logged in again, each logged-out
    # session was refused on /refresh and /me.
    endpoints = summary["endpoints"]
    accounts, dead = summary["accounts_created"], summary["sessions_logged_out"]
    assert accounts > 0 and dead > 0
    assert endpoints["accounts POST /login"]["statuses"] == {"200": accounts}
    assert endpoints["dead POST /refresh"]["statuses"] == {"401": dead}
    assert endpoints["dead GET /me"]["statuses"] == {"401": dead}


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8000",
        "http://192.168.1.10",
        "https://example.com",
        "http://127.0.0.1.example.com:8000",
        "http://user:pass@127.0.0.1:8000",
        "ftp://127.0.0.1",
    ],
)
def test_load_refuses_anything_but_loopback(url: str) -> None:
    # Refused while parsing the arguments: no request, no name lookup.
    result = run_load("--url", url, "--seconds", "1", timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "load.py: error:" in result.stderr
