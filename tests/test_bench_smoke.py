"""bench/run.py, briefly (SQLite, cheap argon2, 1 s per endpoint), so the harness cannot rot.

No timed assertions: only that every endpoint was loaded with a positive rate of successful
answers, the ratios were computed and the workers' RSS was read. Needs wrk (Debian `wrk`):
without it the test is skipped with the reason, or fails under AUTHSVC_TEST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES
from tests.servers import ROOT

pytestmark = pytest.mark.slow


def test_bench_harness_runs(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        reason = "wrk is not installed (apt-get install wrk)"
        if REQUIRE_SERVICES:  # as tests/conftest._unavailable: CI must not skip
            pytest.fail(f"{reason} (AUTHSVC_TEST_REQUIRE_SERVICES=1: CI must not skip)")
        pytest.skip(reason)
    output = tmp_path / "results.json"
    command = [sys.executable, str(ROOT / "bench" / "run.py"), "--backend", "sqlite", "--quick"]
    command += ["--duration", "1", "--connections", "4", "--output", str(output)]
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
            assert 0 < figures["p50_ms"] <= figures["p99_ms"], (server, name, figures)
        assert run[server]["worker_rss_mb"] and min(run[server]["worker_rss_mb"]) > 0
    ratios = run["ratios"]
    for name in ("login_efficiency", "me_vs_protected", "jwks_vs_protected"):
        assert ratios[name]["value"] > 0 and ratios[name]["met"] in {True, False}
    assert ratios["refresh_vs_baseline"]["value"] > 0
    assert ratios["worker_rss_mb"]["value"] > 0
