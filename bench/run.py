"""The benchmark harness: authsvc against raw argon2 and a do-it-yourself baseline, one command.

    python bench/run.py [--backend sqlite|postgres|both] [--duration 10] [--connections 16]
                        [--quick] [--output results.json] [--chart]
    python bench/run.py --scale 1000,1000000 [--duration 10] [--quick] [--chart]

For each backend it starts authsvc under gunicorn (gunicorn.conf.py, throttling off), seeds a user
and sessions, and drives loopback load with wrk (bench/wrk.lua) on POST /login, POST /refresh,
GET /me, GET /.well-known/jwks.json and POST /introspect, one endpoint at a time; then reads the
gunicorn workers' RSS. It then starts bench/baseline_app.py (flask-jwt-extended the tutorial
way) under the same gunicorn settings and loads its /login, /refresh and /protected. Before the
servers, it measures raw argon2 verifications per second with the configured cost in one
process per CPU (the login target's divisor) and in as many processes as gunicorn workers. It
prints a table and the ratios against the issue's targets, and writes everything to a JSON
file (default bench/results/<UTC time>.json). With --chart it also draws it as a PNG beside the
JSON file (bench/chart.py, needs matplotlib).

--scale N1,N2,... (PostgreSQL + Redis only) measures instead how login and refresh hold up as
the users table grows: for each N, a fresh throwaway database is migrated and seeded directly
in SQL with N users (bench-<i>@example.com, i = 1..N, all sharing one password hash computed
with the configured argon2 cost) and one session per user, vacuumed and analysed; then authsvc
is loaded with POST /refresh (real rotations of tokens from HTTP logins as random seeded users)
and POST /login (every request logs in as a random user out of the N). It reports req/s, p50
and p99 per N and the ratio p99(largest N) / p99(smallest N) against the issue's 1.2.

Only 127.0.0.1 is loaded. The PostgreSQL backend uses a throwaway database on the server at
BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres), dropped at the end,
and Redis at BENCH_REDIS_URL (default redis://127.0.0.1:6379/14). Exit status: 0 when every run
completed (targets met or not: the ratios are reported, not enforced), 1 when a run failed.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests.support.servers import BIN, authsvc_gunicorn, free_port, running  # noqa: E402

WRK_SCRIPT = ROOT / "bench" / "wrk.lua"
SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"  # noqa: S105 (loopback only)
INTROSPECTION_CLIENT = ("bench", "bench-introspection-secret")
USERNAME, PASSWORD = "bench-user@example.com", "correct horse battery staple"
QUICK_ARGON2 = {"AUTHSVC_ARGON2_MEMORY_KIB": "1024", "AUTHSVC_ARGON2_TIME_COST": "1"}
DEFAULT_ARGON2 = {"AUTHSVC_ARGON2_MEMORY_KIB": "19456", "AUTHSVC_ARGON2_TIME_COST": "2"}
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")

RSS_SETTLE_SECONDS = 3.0
AUTHSVC_ENDPOINTS = ["jwks", "me", "introspect", "refresh", "login"]
BASELINE_ENDPOINTS = ["protected", "refresh", "login"]
# name: (what, target, the ratio's numerator and denominator: (server, endpoint) or "argon2")
TARGETS = {
    "login_efficiency": "login req/s / raw argon2 verifies/s, one process per CPU >= 0.9",
    "me_vs_protected": "/me req/s / baseline /protected req/s >= 0.7",
    "jwks_vs_protected": "JWKS req/s / baseline /protected req/s >= 1.0",
    "refresh_vs_baseline": "/refresh req/s / baseline /refresh req/s >= 0.5 (SQLite), 0.4 (PG)",
    "worker_rss_mb": "largest gunicorn worker RSS 3 s after the load <= 80 MB",
    "worker_uss_mb": "largest gunicorn worker USS (what it does not share) <= 35 MB",
}


class BenchError(RuntimeError):
    pass


# -- raw argon2 ----------------------------------------------------------------------------------


def _verify_loop(params: dict[str, int], seconds: float) -> int:
    from authsvc.security.passwords import PasswordHasher

    hasher = PasswordHasher(**params)
    stored = hasher.hash(PASSWORD)
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        ok, _ = hasher.verify_and_update(PASSWORD, stored)
        assert ok
        count += 1
    return count


def argon2_rate(params: dict[str, int], processes: int, seconds: float) -> float:
    """Verifications per second of ``processes`` processes verifying in a loop for ``seconds``."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        _verify_loop(params, 0.05)  # import in the parent too: nothing below is start-up cost
        started = time.monotonic()
        counts = list(pool.map(_verify_loop, [params] * processes, [seconds] * processes))
        elapsed = max(time.monotonic() - started, seconds)
    return sum(counts) / elapsed


# -- wrk -----------------------------------------------------------------------------------------


def run_wrk(
    url: str, env: dict[str, str], args: argparse.Namespace, seconds: int | None = None
) -> dict:
    threads = min(args.wrk_threads, args.connections)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{args.connections}",
        f"-d{seconds or args.duration}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    wrk_env = {**os.environ, "BENCH_THREADS": str(threads), **env}
    result = subprocess.run(  # noqa: S603 (a fixed command line)
        command,
        env=wrk_env,
        capture_output=True,
        text=True,
        timeout=(seconds or args.duration) + 60,
    )
    match = re.search(r"^BENCH_RESULT (\{.*\})$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or not match:
        raise BenchError(f"wrk failed on {url}:\n{result.stdout}\n{result.stderr}")
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    failed = raw["errors_status"]
    socket_errors = sum(raw[k] for k in ("errors_connect", "errors_read", "errors_write"))
    return {
        "requests": raw["requests"],
        "non_2xx_3xx": failed,
        "socket_errors": socket_errors,
        "timeouts": raw["errors_timeout"],
        "seconds": round(seconds, 3),
        # Only successful answers count towards the rate.
        "rps": round((raw["requests"] - failed) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
    }


# -- servers -------------------------------------------------------------------------------------


def worker_rss_mb(master_pid: int, field: str = "VmRSS") -> list[float]:
    """VmRSS (or ``field``: VmHWM is the peak) of every child of ``master_pid`` (the gunicorn
    workers), in MB (10^6 bytes)."""
    sizes = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if int(fields.get("PPid", "0").strip()) == master_pid and field in fields:
            kib = int(fields[field].split()[0])
            sizes.append(round(kib * 1024 / 1e6, 1))
    return sorted(sizes)


def worker_memory_mb(master_pid: int) -> dict[str, list[float]]:
    """USS (Private_Clean + Private_Dirty: what the worker alone holds, freed if it exits) and
    PSS (its share of everything it maps) of every child of ``master_pid``, from
    /proc/<pid>/smaps_rollup, in MB (10^6 bytes). With the app preloaded in the master, RSS
    counts the pages a worker shares with the master and its siblings; USS does not."""
    uss, pss = [], []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"PPid:\t{master_pid}\n" not in status.read_text():
                continue
            rollup = status.with_name("smaps_rollup").read_text()
        except OSError:
            continue
        kib = {
            name: int(value.split()[0])
            for name, _, value in (line.partition(":") for line in rollup.splitlines()[1:])
            if value.strip().endswith("kB")
        }
        uss.append(round((kib["Private_Clean"] + kib["Private_Dirty"]) * 1024 / 1e6, 1))
        pss.append(round(kib["Pss"] * 1024 / 1e6, 1))
    return {"uss": sorted(uss), "pss": sorted(pss)}


def _master_pid(port: int) -> int:
    """The pid of the gunicorn master listening on ``port`` (tests.support.servers yields only
    the URL)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            parts = cmdline.read_bytes().split(b"\0")
            environ = cmdline.with_name("environ").read_bytes()
        except OSError:
            continue
        if any(p.endswith(b"gunicorn") for p in parts[:2]) and (
            f"GUNICORN_BIND=127.0.0.1:{port}".encode() in environ.split(b"\0")
        ):
            pid = int(cmdline.parent.name)
            status = (cmdline.parent / "status").read_text()
            ppid = int(re.search(r"^PPid:\s*(\d+)", status, re.MULTILINE).group(1))
            if ppid == os.getpid():
                return pid
    raise BenchError(f"no gunicorn master found for port {port}")


@contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg

    name = f"authsvc_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as error:
        raise BenchError(f"PostgreSQL at {POSTGRES_URL} is unreachable: {error}") from None
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def check_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        raise BenchError(f"Redis at {REDIS_URL} is unreachable: {error}") from None


def base_env(args: argparse.Namespace, workdir: Path, workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSVC_", "GUNICORN_"))}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    metrics = workdir / f"metrics-{uuid.uuid4().hex[:6]}"
    metrics.mkdir()
    return {
        **env,
        **(QUICK_ARGON2 if args.quick else DEFAULT_ARGON2),
        "AUTHSVC_ARGON2_PARALLELISM": "1",
        "AUTHSVC_ENV": "production",
        "AUTHSVC_SECRET_KEY": SECRET,
        "AUTHSVC_RATELIMIT_ENABLED": "false",
        "AUTHSVC_INTROSPECTION_CLIENTS": ":".join(INTROSPECTION_CLIENT),
        "WEB_CONCURRENCY": str(workers),
        "GUNICORN_LOGLEVEL": "warning",
        # Spread wrk's keep-alive connections evenly over the workers: left alone, whichever
        # worker wakes first accepts most of them and the other idles, which made multi-worker
        # figures swing by 2x between runs. A worker at its cap stops accepting, so the rest go
        # to the others; the slack covers the harness's own short-lived connections.
        "GUNICORN_CMD_ARGS": f"--worker-connections {-(-args.connections // workers) + 2}",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }


def seed(url: str, sessions: int) -> tuple[str, list[str]]:
    """Sign a user up and log it in ``sessions`` times: its access token and the refresh tokens."""
    credentials = {"username": USERNAME, "password": PASSWORD}
    # Closed afterwards: a kept-alive connection would hold one of a worker's connection slots.
    with requests.Session() as http:
        answer = http.post(f"{url}/signup", json=credentials, timeout=30)
        if answer.status_code != 201:
            raise BenchError(f"signup failed: {answer.status_code} {answer.text}")
        access = answer.json()["access_token"]
        refresh_tokens = []
        for _ in range(sessions):
            answer = http.post(f"{url}/login", json=credentials, timeout=30)
            if answer.status_code != 200:
                raise BenchError(f"login failed: {answer.status_code} {answer.text}")
            refresh_tokens.append(answer.json()["refresh_token"])
    return access, refresh_tokens


@dataclass
class Server:
    """A running server under test: where it is, and each endpoint's wrk settings per round."""

    name: str
    url: str
    master: int
    specs: dict[str, Callable[[int], tuple[str, dict[str, str]]]]


@contextmanager
def authsvc_server(args, backend: str, workdir: Path, workers: int) -> Iterator[Server]:
    env = base_env(args, workdir, workers)
    port = free_port()
    env["AUTHSVC_ISSUER"] = f"http://127.0.0.1:{port}"
    log = workdir / f"authsvc-{backend}.log"
    database = postgres_database() if backend == "postgres" else _sqlite(workdir)
    with database as database_url:
        env["DATABASE_URL"] = database_url
        if backend == "postgres":
            check_redis()
            env["REDIS_URL"] = REDIS_URL
        with authsvc_gunicorn(env, port, log) as url:
            master = _master_pid(port)
            # Each round's refresh load starts from tokens never sent before (rotation spends
            # them), so every round gets its own share.
            per_round = 2 * args.connections
            access, refresh_tokens = seed(url, sessions=per_round * args.rounds)
            token_files = []
            for index in range(args.rounds):
                token_file = workdir / f"refresh-{backend}-{index}.txt"
                share = refresh_tokens[index * per_round : (index + 1) * per_round]
                token_file.write_text("\n".join(share) + "\n")
                token_files.append(token_file)
            client_id, client_secret = INTROSPECTION_CLIENT
            basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
            fixed = {
                "jwks": ("/.well-known/jwks.json", {"BENCH_METHOD": "GET"}),
                "me": ("/me", {"BENCH_AUTHORIZATION": f"Bearer {access}"}),
                "introspect": (
                    "/introspect",
                    {
                        "BENCH_METHOD": "POST",
                        "BENCH_AUTHORIZATION": f"Basic {basic}",
                        "BENCH_CONTENT_TYPE": "application/x-www-form-urlencoded",
                        "BENCH_BODY": f"token={access}",
                    },
                ),
                "login": (
                    "/login",
                    {
                        "BENCH_METHOD": "POST",
                        "BENCH_CONTENT_TYPE": "application/json",
                        "BENCH_BODY": json.dumps({"username": USERNAME, "password": PASSWORD}),
                    },
                ),
            }
            specs: dict[str, Callable[[int], tuple[str, dict[str, str]]]] = {
                name: (lambda _round, spec=spec: spec) for name, spec in fixed.items()
            }
            specs["refresh"] = lambda index: (
                "/refresh",
                {"BENCH_REFRESH_TOKENS": str(token_files[index])},
            )
            yield Server("authsvc", url, master, specs)


@contextmanager
def _sqlite(workdir: Path) -> Iterator[str]:
    yield f"sqlite:///{workdir}/authsvc-{uuid.uuid4().hex[:6]}.db"


@contextmanager
def baseline_server(args, backend: str, workdir: Path, workers: int) -> Iterator[Server]:
    env = base_env(args, workdir, workers)
    port = free_port()
    env["GUNICORN_BIND"] = f"127.0.0.1:{port}"
    if backend == "postgres":
        env["REDIS_URL"] = REDIS_URL  # unused by the baseline; same gunicorn settings
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"baseline-{backend}.log"
    command = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "bench.baseline_app:app"]
    password = "baseline password 1"  # noqa: S105
    env["BASELINE_PASSWORD"] = password
    with running(command, env, f"{url}/healthz", log):
        master = _master_pid(port)
        answer = requests.post(
            f"{url}/login", json={"username": "alice", "password": password}, timeout=30
        )
        if answer.status_code != 200:
            raise BenchError(f"baseline login failed: {answer.status_code} {answer.text}")
        tokens = answer.json()
        access, refresh = tokens["access_token"], tokens["refresh_token"]
        fixed = {
            "protected": ("/protected", {"BENCH_AUTHORIZATION": f"Bearer {access}"}),
            # No rotation in the baseline: the same refresh token is valid every time.
            "refresh": (
                "/refresh",
                {"BENCH_METHOD": "POST", "BENCH_AUTHORIZATION": f"Bearer {refresh}"},
            ),
            "login": (
                "/login",
                {
                    "BENCH_METHOD": "POST",
                    "BENCH_CONTENT_TYPE": "application/json",
                    "BENCH_BODY": json.dumps({"username": "alice", "password": password}),
                },
            ),
        }
        specs = {name: (lambda _round, spec=spec: spec) for name, spec in fixed.items()}
        yield Server("baseline", url, master, specs)


# Each comparison's two sides run back to back, and the whole schedule repeats --rounds times,
# so a slow minute on this shared machine hits both sides of a ratio alike.
SCHEDULE = [
    ("authsvc", "jwks"),
    ("authsvc", "me"),
    ("baseline", "protected"),
    ("authsvc", "introspect"),
    ("authsvc", "refresh"),
    ("baseline", "refresh"),
    ("authsvc", "login"),
    ("baseline", "login"),
]


def bench_side_by_side(args, backend: str, workdir: Path, workers: int) -> dict:
    """Both servers up at once; the schedule, round after round; results summed over rounds."""
    seconds = max(1, round(args.duration / args.rounds))
    rounds: dict[tuple[str, str], list[dict]] = {step: [] for step in SCHEDULE}
    with (
        authsvc_server(args, backend, workdir, workers) as authsvc,
        baseline_server(args, backend, workdir, workers) as baseline,
    ):
        servers = {"authsvc": authsvc, "baseline": baseline}
        for index in range(args.rounds):
            for name, endpoint in SCHEDULE:
                server = servers[name]
                path, wrk_env = server.specs[endpoint](index)
                result = run_wrk(f"{server.url}{path}", wrk_env, args, seconds=seconds)
                result["worker_rss_mb_after"] = worker_rss_mb(server.master)
                rounds[(name, endpoint)].append(result)
                _progress(f"{backend} {name} {endpoint} #{index + 1}", result)
        time.sleep(RSS_SETTLE_SECONDS)
        run = {}
        for name, server in servers.items():
            run[name] = {
                "endpoints": {
                    endpoint: _combine(rounds[(owner, endpoint)])
                    for owner, endpoint in SCHEDULE
                    if owner == name
                },
                "worker_rss_mb": worker_rss_mb(server.master),
                "worker_peak_rss_mb": worker_rss_mb(server.master, "VmHWM"),
                **{
                    f"worker_{kind}_mb": sizes
                    for kind, sizes in worker_memory_mb(server.master).items()
                },
            }
    return run


def _combine(results: list[dict]) -> dict:
    """One endpoint's rounds: counts summed, the rate over their total time, median latencies."""
    total = {key: sum(r[key] for r in results) for key in ("requests", "non_2xx_3xx")}
    total |= {key: sum(r[key] for r in results) for key in ("socket_errors", "timeouts")}
    seconds = sum(r["seconds"] for r in results)
    return {
        **total,
        "seconds": round(seconds, 3),
        "rps": round((total["requests"] - total["non_2xx_3xx"]) / seconds, 1) if seconds else 0.0,
        "p50_ms": statistics.median(r["p50_ms"] for r in results),
        "p99_ms": statistics.median(r["p99_ms"] for r in results),
        "max_ms": max(r["max_ms"] for r in results),
        "rounds_rps": [r["rps"] for r in results],
        "rounds_p50_ms": [r["p50_ms"] for r in results],
        "rounds_p99_ms": [r["p99_ms"] for r in results],
        "worker_rss_mb_after": results[-1]["worker_rss_mb_after"],
    }


def _print_ratios(ratios: dict[str, dict], heading: str) -> None:
    """The ratios table under a report: value, target and whether it is met."""
    width = max([len(heading), *map(len, ratios)]) + 1
    print(f"{heading:<{width}} {'value':>8}  {'target':<8} met")
    for label, r in ratios.items():
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        print(f"{label:<{width}} {r['value']!s:>8}  {r['target']:<8} {met}")


def _progress(label: str, result: dict) -> None:
    print(
        f"  {label:<28} {result['rps']:>9.1f} req/s  p50 {result['p50_ms']:>7.2f} ms  "
        f"p99 {result['p99_ms']:>7.2f} ms  non-2xx {result['non_2xx_3xx']}  "
        f"RSS MB {result['worker_rss_mb_after']}",
        file=sys.stderr,
        flush=True,
    )


# -- scale: login and refresh against N users ------------------------------------------------------

# One pattern for the SQL seed, the HTTP logins and wrk.lua (string.format): user i is this with i.
SCALE_USERNAME_FORMAT = "bench-%d@example.com"
SCALE_ENDPOINTS = ["refresh", "login"]
SCALE_P99_TARGET = 1.2
SCALE_TARGETS = {
    f"{name}_p99_scale": (
        f"/{name} p99 with the largest N users / with the smallest N <= {SCALE_P99_TARGET}"
    )
    for name in SCALE_ENDPOINTS
}
SESSION_MAX_AGE_S = 90 * 24 * 3600  # AUTHSVC_SESSION_MAX_AGE's default, for the seeded sessions

_SEED_USERS = """
INSERT INTO users (id, username, password_hash, roles, created_at, disabled_at)
SELECT gen_random_uuid(), %(prefix)s || i || %(suffix)s, %(hash)s, '[]'::json,
       now() - random() * interval '365 days', NULL
FROM generate_series(1, %(users)s) AS i
"""
# One session per user, like a service whose users each keep one device logged in: created over
# the last 120 days (so about a quarter are past their 90-day maximum age), rotated since, one
# in ten revoked by a logout.
_SEED_SESSIONS = """
INSERT INTO sessions (id, user_id, generation, created_at, rotated_at, last_used_at, expires_at,
                      revoked_at, revoked_reason, user_agent, ip, amr, aal, auth_time)
SELECT gen_random_uuid(), id, generation, created, rotated, rotated,
       created + make_interval(secs => %(max_age)s),
       CASE WHEN revoked THEN rotated END, CASE WHEN revoked THEN 'logout_local' END,
       'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
       '192.0.2.' || (1 + floor(random() * 254)::int), '["pwd"]'::json, 'aal1', created
FROM (
    SELECT id, created, created + random() * (now() - created) AS rotated,
           floor(random() * 20)::int AS generation, random() < 0.1 AS revoked
    FROM (SELECT id, greatest(created_at, now() - random() * interval '120 days') AS created
          FROM users) AS u
) AS s
"""


def scale_username(i: int) -> str:
    return SCALE_USERNAME_FORMAT % i


def scale_password_hash(params: dict[str, int]) -> str:
    """The one hash every seeded user shares, made by the service's own hasher and cost, so a
    login verifies exactly as it would for a user who signed up (and never needs an upgrade)."""
    from authsvc.security import usernames
    from authsvc.security.passwords import PasswordHasher

    for name in (scale_username(1), scale_username(10_000_000)):
        if usernames.validate(name) != name:
            raise BenchError(f"{name!r} is not stored as is: fix SCALE_USERNAME_FORMAT")
    return PasswordHasher(**params).hash(PASSWORD)


def seed_scale(database_url: str, users: int, password_hash: str) -> dict:
    """Insert ``users`` users and one session each in SQL, then VACUUM (ANALYZE) both tables."""
    import psycopg

    prefix, suffix = SCALE_USERNAME_FORMAT.split("%d")
    timings: dict[str, float] = {}
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit = off")
            mark = time.monotonic()
            conn.execute(
                _SEED_USERS,
                {"prefix": prefix, "suffix": suffix, "hash": password_hash, "users": users},
            )
            timings["users_s"] = round(time.monotonic() - mark, 3)
            mark = time.monotonic()
            conn.execute(_SEED_SESSIONS, {"max_age": SESSION_MAX_AGE_S})
            timings["sessions_s"] = round(time.monotonic() - mark, 3)
        # As after any bulk load (and autovacuum is not relied on: it may be off, or would run
        # in the middle of the load): fresh statistics, hint bits set, visibility map built.
        mark = time.monotonic()
        conn.execute("VACUUM (ANALYZE) users, sessions")
        timings["vacuum_analyze_s"] = round(time.monotonic() - mark, 3)
        # Write the bulk load's dirty pages out now, as an operator would after an import,
        # rather than in a checkpoint in the middle of the measured load.
        mark = time.monotonic()
        conn.execute("CHECKPOINT")
        timings["checkpoint_s"] = round(time.monotonic() - mark, 3)
        timings["total_s"] = round(time.monotonic() - started, 3)
        rows = conn.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM sessions), "
            "pg_database_size(current_database())"
        ).fetchone()
    if rows[0] != users or rows[1] != users:
        raise BenchError(f"seeded {rows[0]} users and {rows[1]} sessions, expected {users}")
    return {
        "seed_seconds": timings,
        "seeded": {"users": rows[0], "sessions": rows[1]},
        "database_mb": round(rows[2] / 1e6, 1),
    }


def scale_logins(url: str, users: int, count: int) -> list[str]:
    """Log in over HTTP as the first, the last and ``count`` random seeded users (distinct when
    there are enough): the refresh tokens of the random ones."""
    http = requests.Session()

    def login(i: int) -> str:
        credentials = {"username": scale_username(i), "password": PASSWORD}
        answer = http.post(f"{url}/login", json=credentials, timeout=30)
        if answer.status_code != 200:
            raise BenchError(f"login as seeded user {i} failed: {answer.status_code} {answer.text}")
        return answer.json()["refresh_token"]

    login(1)
    login(users)
    pick = random.Random()  # noqa: S311 (which users to log in as, not a secret)
    if users >= count:
        indices = pick.sample(range(1, users + 1), count)
    else:
        indices = [pick.randint(1, users) for _ in range(count)]
    return [login(i) for i in indices]


def _database_now(database_url: str) -> datetime:
    import psycopg

    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT now()").fetchone()[0]


def login_checks(database_url: str, since: datetime, password_hash: str) -> dict:
    """What the login load really did: sessions created (and for how many distinct users) since
    ``since``, and how many stored hashes were rewritten (0: no login paid for an upgrade)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        created, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT user_id) FROM sessions WHERE created_at >= %s",
            (since,),
        ).fetchone()
        upgraded = conn.execute(
            "SELECT count(*) FROM users WHERE password_hash <> %s", (password_hash,)
        ).fetchone()[0]
    return {"sessions_created": created, "distinct_users": distinct, "hashes_rewritten": upgraded}


@contextmanager
def scale_server(
    args: argparse.Namespace, users: int, password_hash: str, workdir: Path, workers: int
) -> Iterator[dict]:
    """authsvc on its own database seeded with ``users`` users; what the rounds need."""
    env = base_env(args, workdir, workers)
    port = free_port()
    env["AUTHSVC_ISSUER"] = f"http://127.0.0.1:{port}"
    check_redis()
    env["REDIS_URL"] = REDIS_URL
    log = workdir / f"authsvc-scale-{users}.log"
    with postgres_database() as database_url:
        env["DATABASE_URL"] = database_url
        with authsvc_gunicorn(env, port, log) as url:
            # Seeded while the (idle) server is up: authsvc_gunicorn migrates before it starts.
            point = seed_scale(database_url, users, password_hash)
            seconds = point["seed_seconds"]["total_s"]
            print(f"  scale {users} users: seeded in {seconds:.1f} s", file=sys.stderr, flush=True)
            per_round = 2 * args.connections
            tokens = scale_logins(url, users, per_round * args.rounds)
            token_files = []
            for index in range(args.rounds):
                token_file = workdir / f"refresh-scale-{users}-{index}.txt"
                share = tokens[index * per_round : (index + 1) * per_round]
                token_file.write_text("\n".join(share) + "\n")
                token_files.append(token_file)
            login = {
                "BENCH_LOGIN_USERS": str(users),
                "BENCH_LOGIN_FORMAT": SCALE_USERNAME_FORMAT,
                "BENCH_LOGIN_PASSWORD": PASSWORD,
            }
            yield {
                "users": users,
                "url": url,
                "master": _master_pid(port),
                "database_url": database_url,
                "point": point,
                "specs": {
                    "refresh": lambda index: (
                        "/refresh",
                        {"BENCH_REFRESH_TOKENS": str(token_files[index])},
                    ),
                    "login": lambda _index: ("/login", login),
                },
            }


def bench_scale_points(
    args: argparse.Namespace, counts: list[int], password_hash: str, workdir: Path, workers: int
) -> dict[str, dict]:
    """Every user count's server at once; each endpoint's load alternates between them, round
    after round, so a slow minute on this shared machine hits every count alike."""
    seconds = max(1, round(args.duration / args.rounds))
    with ExitStack() as stack:
        servers = [
            stack.enter_context(scale_server(args, users, password_hash, workdir, workers))
            for users in counts
        ]
        rounds: dict[tuple[int, str], list[dict]] = {}
        since = {server["users"]: _database_now(server["database_url"]) for server in servers}
        for index in range(args.rounds):
            for name in SCALE_ENDPOINTS:
                for server in servers:
                    path, wrk_env = server["specs"][name](index)
                    result = run_wrk(f"{server['url']}{path}", wrk_env, args, seconds=seconds)
                    result["worker_rss_mb_after"] = worker_rss_mb(server["master"])
                    rounds.setdefault((server["users"], name), []).append(result)
                    _progress(f"scale {server['users']} {name} #{index + 1}", result)
        points = {}
        for server in servers:
            users, point = server["users"], server["point"]
            point["endpoints"] = {name: _combine(rounds[(users, name)]) for name in SCALE_ENDPOINTS}
            point["login_checks"] = login_checks(
                server["database_url"], since[users], password_hash
            )
            point["worker_rss_mb"] = worker_rss_mb(server["master"])
            points[str(users)] = point
    return points


def scale_ratios(points: dict[str, dict]) -> dict:
    """p99 (and req/s) of every N against the smallest N; the target applies to the largest."""
    counts = sorted(points, key=int)
    smallest, largest = counts[0], counts[-1]
    out = {}
    for name in SCALE_ENDPOINTS:
        base = points[smallest]["endpoints"][name]
        for n in counts:
            figures = points[n]["endpoints"][name]
            figures["p99_vs_smallest"] = (
                round(figures["p99_ms"] / base["p99_ms"], 3) if base["p99_ms"] else None
            )
            figures["rps_vs_smallest"] = (
                round(figures["rps"] / base["rps"], 3) if base["rps"] else None
            )
        value = points[largest]["endpoints"][name]["p99_vs_smallest"]
        out[f"{name}_p99_scale"] = {
            "value": value,
            "target": f"<= {SCALE_P99_TARGET}",
            "met": None if value is None or largest == smallest else value <= SCALE_P99_TARGET,
            "users": [int(largest), int(smallest)],
        }
    return out


def scale_problems(points: dict[str, dict]) -> list[str]:
    """Anything that makes the figures untrustworthy: failed answers, hashes being upgraded."""
    problems = []
    for n, point in points.items():
        for name, r in point["endpoints"].items():
            bad = r["non_2xx_3xx"] + r["socket_errors"] + r["timeouts"]
            if bad or r["rps"] <= 0:
                problems.append(f"{n} users, /{name}: {bad} failed requests, {r['rps']} req/s")
        if point["login_checks"]["hashes_rewritten"]:
            rewritten = point["login_checks"]["hashes_rewritten"]
            problems.append(f"{n} users: logins rewrote {rewritten} password hashes")
    return problems


def print_scale_report(report: dict) -> None:
    print(
        f"\n== scale: PostgreSQL + Redis, {report['workers']} worker(s) x {report['threads']} "
        f"threads, argon2id {report['argon2_params']} =="
    )
    header = ("users", "seed s", "endpoint", "req/s", "p50 ms", "p99 ms", "errors", "p99/smallest")
    print("{:>9} {:>7} {:<9} {:>9} {:>8} {:>8} {:>7} {:>13}".format(*header))
    for n, point in sorted(report["scale"].items(), key=lambda item: int(item[0])):
        for name, r in point["endpoints"].items():
            errors = r["non_2xx_3xx"] + r["socket_errors"] + r["timeouts"]
            print(
                f"{n:>9} {point['seed_seconds']['total_s']:>7.1f} {name:<9} {r['rps']:>9.1f} "
                f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {errors:>7} "
                f"{r['p99_vs_smallest']!s:>13}"
            )
        checks = point["login_checks"]
        print(
            f"{'':>9} login load: {checks['sessions_created']} sessions for "
            f"{checks['distinct_users']} distinct users, {checks['hashes_rewritten']} hashes "
            f"rewritten; seed {point['seed_seconds']}, database {point['database_mb']} MB"
        )
    _print_ratios(
        {f"{name} ({r['users'][0]} / {r['users'][1]})": r for name, r in report["ratios"].items()},
        "ratio (users / users)",
    )


def run_scale(args: argparse.Namespace, report: dict, workers: int) -> int:
    params = report["argon2_params"]
    mark = time.monotonic()
    password_hash = scale_password_hash(params)
    report["password_hash_seconds"] = round(time.monotonic() - mark, 3)
    status = 0
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as tmp:
        try:
            report["scale"] = bench_scale_points(
                args, args.scale, password_hash, Path(tmp), workers
            )
        except (BenchError, AssertionError) as error:
            print(f"bench: scale run failed: {error}", file=sys.stderr)
            report["problems"].append(f"the run failed: {error}")
            status = 1
    if not report["scale"]:
        return status
    report["ratios"] = scale_ratios(report["scale"])
    for problem in scale_problems(report["scale"]):
        print(f"bench: {problem}", file=sys.stderr)
        report["problems"].append(problem)
        status = 1
    print_scale_report(report)
    return status


# -- report --------------------------------------------------------------------------------------


def ratios(backend: str, run: dict, argon2: dict[str, float]) -> dict:
    ours, base = run["authsvc"]["endpoints"], run["baseline"]["endpoints"]
    # The machine's limit: raw argon2 in one process per CPU (a worker's threads hash on every
    # core too, so "as many processes as workers" overstated login on the one-worker SQLite).
    cpus = str(os.cpu_count() or 1)
    raw = argon2.get(cpus, argon2[str(run["workers"])])
    refresh_target = 0.5 if backend == "sqlite" else 0.4

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 3) if b else None

    rss = max(run["authsvc"]["worker_rss_mb"], default=None)
    uss = max(run["authsvc"].get("worker_uss_mb", []), default=None)
    table = {
        "login_efficiency": (ratio(ours["login"]["rps"], raw), 0.9, ">="),
        "me_vs_protected": (ratio(ours["me"]["rps"], base["protected"]["rps"]), 0.7, ">="),
        "jwks_vs_protected": (ratio(ours["jwks"]["rps"], base["protected"]["rps"]), 1.0, ">="),
        "refresh_vs_baseline": (
            ratio(ours["refresh"]["rps"], base["refresh"]["rps"]),
            refresh_target,
            ">=",
        ),
        "worker_rss_mb": (rss, 80.0, "<="),
        "worker_uss_mb": (uss, 35.0, "<="),
    }
    out = {}
    for name, (value, target, op) in table.items():
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out[name] = {"value": value, "target": f"{op} {target}", "met": met}
    # The earlier measure, kept for comparison with older result files.
    if str(run["workers"]) != cpus:
        out["login_vs_worker_processes"] = {
            "value": ratio(ours["login"]["rps"], argon2[str(run["workers"])]),
            "target": "(information)",
            "met": None,
        }
    return out


def print_report(report: dict) -> None:
    print(f"\nargon2id {report['argon2_params']}: raw verifies/s by processes: ", end="")
    print(", ".join(f"{n}: {v:.1f}" for n, v in report["argon2_verifies_per_second"].items()))
    for backend, run in report["runs"].items():
        print(f"\n== {backend}: {run['workers']} worker(s) x {run['threads']} threads ==")
        header = ("server", "endpoint", "req/s", "p50 ms", "p99 ms", "errors")
        print("{:<9} {:<11} {:>9} {:>8} {:>8} {:>7}".format(*header))
        for server in ("authsvc", "baseline"):
            for name, r in run[server]["endpoints"].items():
                errors = r["non_2xx_3xx"] + r["socket_errors"] + r["timeouts"]
                print(
                    f"{server:<9} {name:<11} {r['rps']:>9.1f} {r['p50_ms']:>8.2f} "
                    f"{r['p99_ms']:>8.2f} {errors:>7}"
                )
            print(
                f"{server:<9} worker RSS MB: {run[server]['worker_rss_mb']} "
                f"({RSS_SETTLE_SECONDS:g} s after the load; peak "
                f"{run[server].get('worker_peak_rss_mb')}); USS "
                f"{run[server].get('worker_uss_mb')}, PSS {run[server].get('worker_pss_mb')}"
            )
        _print_ratios(run["ratios"], "ratio")


def _scale_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of user counts") from None
    if not counts or not all(1 <= n <= 10_000_000 for n in counts):
        raise argparse.ArgumentTypeError("user counts must be 1..10,000,000")
    return counts


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C: servers are stopped and throwaway databases dropped.
    raise SystemExit(128 + signum)


def draw_chart(results: Path) -> bool:
    """bench/chart.py on ``results``, beside it as .png; False when matplotlib is missing."""
    from bench import chart

    try:
        out = chart.draw(json.loads(results.read_text()), results.with_suffix(".png"))
    except ImportError as error:
        print(f"bench: --chart: {error}; pip install -e '.[bench]'", file=sys.stderr)
        return False
    print(f"chart: {out}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per endpoint")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="split each endpoint's load into this many rounds, interleaved with the other side",
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="cheap argon2 (1 MiB, t=1)")
    parser.add_argument(
        "--scale",
        type=_scale_counts,
        metavar="N1,N2,...",
        help="login and refresh with N seeded users each (PostgreSQL + Redis), e.g. 1000,1000000",
    )
    parser.add_argument("--output", type=Path, help="results JSON (default bench/results/...)")
    parser.add_argument("--chart", action="store_true", help="also draw the results as a PNG")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 600 or not 1 <= args.connections <= 256:
        parser.error("--duration must be 1..600 and --connections 1..256")
    if args.scale and args.backend not in (None, "postgres"):
        parser.error("--scale runs on PostgreSQL + Redis only")
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _terminate)

    backend = args.backend or "both"
    backends = ["sqlite", "postgres"] if backend == "both" else [backend]
    cpus = os.cpu_count() or 1
    # gunicorn.conf.py's defaults: one process without Redis, one per CPU with it.
    workers = {"sqlite": 1, "postgres": cpus}
    threads = int(os.environ.get("GUNICORN_THREADS", "4"))
    cost = QUICK_ARGON2 if args.quick else DEFAULT_ARGON2
    params = {
        "memory_kib": int(cost["AUTHSVC_ARGON2_MEMORY_KIB"]),
        "time_cost": int(cost["AUTHSVC_ARGON2_TIME_COST"]),
        "parallelism": 1,
    }
    report: dict = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": cpus, "platform": sys.platform, "python": sys.version.split()[0]},
        "settings": {
            "duration_s": args.duration,
            "connections": args.connections,
            "wrk_threads": args.wrk_threads,
            "quick": args.quick,
        },
        "argon2_params": params,
    }
    if args.scale:
        report["mode"] = "scale"
        report["settings"]["scale"] = args.scale
        report |= {"workers": workers["postgres"], "threads": threads, "targets": SCALE_TARGETS}
        report |= {"scale": {}, "ratios": {}, "problems": []}
        status = run_scale(args, report, workers["postgres"])
    else:
        report |= {"targets": TARGETS, "argon2_verifies_per_second": {}, "runs": {}}
        status = run_endpoints(args, report, backends, workers, threads)

    output = args.output or (
        ROOT / "bench" / "results" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {output}")
    if args.chart and not draw_chart(output):
        status = 1
    return status


def run_endpoints(
    args: argparse.Namespace,
    report: dict,
    backends: list[str],
    workers: dict[str, int],
    threads: int,
) -> int:
    params, cpus = report["argon2_params"], report["machine"]["cpus"]
    seconds = min(max(args.duration / 2, 1.0), 5.0)
    for n in sorted({workers[b] for b in backends} | {cpus}):
        rate = argon2_rate(params, n, seconds)
        report["argon2_verifies_per_second"][str(n)] = round(rate, 1)
        print(f"  raw argon2 verify, {n} process(es): {rate:.1f}/s", file=sys.stderr, flush=True)

    status = 0
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as tmp:
        workdir = Path(tmp)
        for backend in backends:
            try:
                run = {
                    "workers": workers[backend],
                    "threads": threads,
                    "rounds": args.rounds,
                    **bench_side_by_side(args, backend, workdir, workers[backend]),
                }
            except (BenchError, AssertionError) as error:
                print(f"bench: {backend} failed: {error}", file=sys.stderr)
                status = 1
                continue
            run["ratios"] = ratios(backend, run, report["argon2_verifies_per_second"])
            report["runs"][backend] = run

    print_report(report)
    return status


if __name__ == "__main__":
    sys.exit(main())
