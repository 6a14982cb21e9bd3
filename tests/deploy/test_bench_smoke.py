"""bench/run.py and bench/chart.py, briefly (cheap argon2, 1 s per endpoint), so they cannot rot.

No timed assertions: only that every endpoint was loaded with a positive rate of successful
answers, the ratios were computed and the workers' RSS was read. Needs wrk (Debian `wrk`):
without it the tests are skipped with the reason, or fail under AUTHSVC_TEST_REQUIRE_SERVICES=1,
as does the scale mode without PostgreSQL and Redis. The chart test needs matplotlib (in the
test extra).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from tests.support.servers import ROOT
from tests.support.settings import REQUIRE_SERVICES

pytestmark = pytest.mark.slow

RUN = ROOT / "bench" / "run.py"
CHART = ROOT / "bench" / "chart.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:  # as tests.support.settings.unavailable: CI must not skip
        pytest.fail(f"{reason} (AUTHSVC_TEST_REQUIRE_SERVICES=1: CI must not skip)")
    pytest.skip(reason)


def _require_wrk() -> None:
    if shutil.which("wrk") is None:
        _unavailable("wrk is not installed (apt-get install wrk)")


def test_bench_harness_runs(tmp_path: Path) -> None:
    _require_wrk()
    output = tmp_path / "results.json"
    command = [sys.executable, str(RUN), "--backend", "sqlite", "--quick"]
    # Two rounds: each round's refresh load must start from its own unspent tokens.
    command += ["--duration", "1", "--rounds", "2", "--connections", "4", "--output", str(output)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

    report = json.loads(output.read_text())
    assert set(report["argon2_verifies_per_second"]) >= {"1"}
    assert all(rate > 0 for rate in report["argon2_verifies_per_second"].values())
    run = report["runs"]["sqlite"]
    expected = {
        "authsvc": {"login", "refresh", "me", "jwks", "introspect"},
        "baseline": {"login", "refresh", "protected"},
    }
    for server, endpoints in expected.items():
        assert set(run[server]["endpoints"]) == endpoints
        for name, figures in run[server]["endpoints"].items():
            assert figures["rps"] > 0, (server, name, figures)
            assert figures["non_2xx_3xx"] == 0, (server, name, figures)
            assert len(figures["rounds_rps"]) == 2, (server, name, figures)
            assert len(figures["rounds_p99_ms"]) == 2, (server, name, figures)
            assert 0 < figures["p50_ms"] <= figures["p99_ms"], (server, name, figures)
        assert run[server]["worker_rss_mb"] and min(run[server]["worker_rss_mb"]) > 0
        # What a worker does not share is less than what it maps, and its share lies between.
        for uss, pss, rss in zip(
            run[server]["worker_uss_mb"],
            run[server]["worker_pss_mb"],
            run[server]["worker_rss_mb"],
            strict=True,
        ):
            assert 0 < uss <= pss <= rss, run[server]
    ratios = run["ratios"]
    for name in ("login_efficiency", "me_vs_protected", "jwks_vs_protected"):
        assert ratios[name]["value"] > 0 and ratios[name]["met"] in {True, False}
    assert ratios["refresh_vs_baseline"]["value"] > 0
    assert ratios["worker_rss_mb"]["value"] > 0
    assert 0 < ratios["worker_uss_mb"]["value"] <= ratios["worker_rss_mb"]["value"]


@pytest.mark.services
def test_bench_scale_mode_runs(tmp_path: Path) -> None:
    """--scale with tiny N: seeded users really log in (random ones), refresh really rotates,
    the p99 ratios are computed, and both throwaway databases are gone afterwards."""
    _require_wrk()
    from bench.run import POSTGRES_URL, REDIS_URL

    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as error:
        _unavailable(f"PostgreSQL at {POSTGRES_URL} is unreachable: {error}".strip())
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        _unavailable(f"Redis at {REDIS_URL} is unreachable: {error}")

    def bench_databases() -> set[str]:
        rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'authsvc_bench_%'")
        return {name for (name,) in rows}

    with admin:
        before = bench_databases()
        output = tmp_path / "scale.json"
        command = [sys.executable, str(RUN), "--scale", "50,200", "--quick", "--duration", "1"]
        command += ["--connections", "4", "--output", str(output)]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        # Others may be benchmarking on the same server: only ours must be gone.
        assert not (bench_databases() - before), "a throwaway database was left behind"

    report = json.loads(output.read_text())
    assert report["mode"] == "scale" and report["problems"] == []
    assert set(report["scale"]) == {"50", "200"}
    for users, point in report["scale"].items():
        assert point["seeded"] == {"users": int(users), "sessions": int(users)}
        assert point["seed_seconds"]["total_s"] >= 0
        assert set(point["endpoints"]) == {"refresh", "login"}
        for name, figures in point["endpoints"].items():
            assert figures["rps"] > 0, (users, name, figures)
            assert figures["non_2xx_3xx"] == 0, (users, name, figures)
            assert 0 < figures["p50_ms"] <= figures["p99_ms"], (users, name, figures)
            assert figures["p99_vs_smallest"] > 0
        checks = point["login_checks"]
        # Every successful login made a session, for random users (not one user over and over).
        assert checks["sessions_created"] >= point["endpoints"]["login"]["requests"] > 0
        assert checks["distinct_users"] > min(int(users), 20) // 2
        assert checks["hashes_rewritten"] == 0
    for name in ("login_p99_scale", "refresh_p99_scale"):
        ratio = report["ratios"][name]
        assert ratio["value"] > 0 and ratio["met"] in {True, False}
        assert ratio["users"] == [200, 50]


def test_bench_chart_draws_png(tmp_path: Path) -> None:
    """bench/chart.py on a results file of bench/run.py (the committed figures of an endpoint
    run, and a scale run's shape) writes a PNG."""
    pytest.importorskip(
        "matplotlib", reason="matplotlib is not installed (pip install -e '.[test]')"
    )
    results = sorted((ROOT / "bench" / "results").glob("*.json"))
    assert results, "bench/results/ has no results file to draw"
    scale = {
        "mode": "scale",
        "started": "2026-11-24T12:00:00+00:00",
        "workers": 2,
        "threads": 4,
        "scale": {
            str(users): {
                "endpoints": {name: {"rps": rps, "p99_ms": p99} for name, rps, p99 in figures}
            }
            for users, figures in (
                (1000, [("refresh", 180.0, 130.0), ("login", 66.0, 320.0)]),
                (1000000, [("refresh", 170.0, 140.0), ("login", 64.0, 330.0)]),
            )
        },
        "ratios": {
            "refresh_p99_scale": {"value": 1.077, "target": "<= 1.2", "met": True},
            "login_p99_scale": {"value": 1.031, "target": "<= 1.2", "met": True},
        },
    }
    scale_file = tmp_path / "scale.json"
    scale_file.write_text(json.dumps(scale))
    for source, out in ((results[-1], tmp_path / "endpoints.png"), (scale_file, None)):
        command = [sys.executable, str(CHART), str(source)]
        command += ["-o", str(out)] if out else []
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        png = out or source.with_suffix(".png")
        assert result.stdout.strip() == str(png)
        data = png.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, len(data)
