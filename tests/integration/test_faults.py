"""Fault injection under real gunicorn, on throwaway PostgreSQL and Redis servers (DESIGN §2, §3).

Each test starts its own authsvc (tests.support.servers.authsvc_gunicorn) against a private
PostgreSQL cluster and a private redis-server on free ports (tests.support.throwaway), then stops,
kills or freezes them. The shared servers on 5432 and 6379 are never touched. Every client call
and every wait is bounded; every server is stopped in a finally block.

1. PostgreSQL stopped: writes and token checks (/me, /introspect) answer 503 `unavailable` with
   Retry-After, fast, never 200; /readyz 503, /healthz 200; JWKS and discovery keep answering from
   the key cache; after the restart everything recovers without restarting gunicorn, and a
   restart nobody noticed costs no request.
2. Redis stopped or frozen: access-token checks fall back to the database (a live session is
   served, a revoked one never), logout and session revocation still reach the database; with
   throttling on, the throttled endpoints answer 503 rather than going unthrottled.
3. A worker SIGKILLed in the middle of /refresh, before and after the rotation commits: the
   client's retry within the grace window succeeds and there is only ever one live generation.
4. The revocation broadcast (authsvc.tokens.session_states): with warm session caches, a logout
   or a CLI disable on one replica is refused on another within 100 ms; while Redis is frozen
   (no healthy subscription) every check reads the database; a Redis restart or a thaw leaves
   no stale entry behind.
"""

from __future__ import annotations

import os
import pwd
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import jwt
import psycopg
import pytest
import requests

from tests.support.helpers import PASSWORD
from tests.support.servers import authsvc_gunicorn, flask_command, free_port
from tests.support.settings import FAST_ARGON2, TEST_SECRET, unavailable
from tests.support.throwaway import (
    ThrowawayPostgres,
    ThrowawayRedis,
    command_line,
    find_postgres_bindir,
    find_redis_server,
    parent_pid,
    pid_of_connection,
    wait_for,
)

pytestmark = pytest.mark.slow

# A client gives up after this long; an outage must be answered well before it.
CLIENT_TIMEOUT = 15.0
PROMPT = 5.0
RECOVERY = 30.0
INTROSPECTION_ID, INTROSPECTION_SECRET = "resource-server", "introspection-secret-0123456789"
# Inherited variables that would point the service elsewhere or change its shape.
_DROP_PREFIXES = ("AUTHSVC_", "GUNICORN_")
_DROP = {"DATABASE_URL", "REDIS_URL", "WEB_CONCURRENCY", "PORT", "PROMETHEUS_MULTIPROC_DIR"}


# -- throwaway servers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[ThrowawayPostgres]:
    bindir = find_postgres_bindir()
    if bindir is None:
        unavailable("initdb/pg_ctl not found (PATH, /usr/lib/postgresql/*/bin)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no `postgres` OS user to run initdb as")
    cluster = ThrowawayPostgres(bindir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def redis_process() -> Iterator[ThrowawayRedis]:
    executable = find_redis_server()
    if executable is None:
        unavailable("redis-server not found on PATH")
    server = ThrowawayRedis(executable)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def pg(pg_cluster: ThrowawayPostgres) -> ThrowawayPostgres:
    """The module's cluster, running (an earlier test may have failed with it stopped)."""
    pg_cluster.ensure_running()
    return pg_cluster


@pytest.fixture
def redis_server(redis_process: ThrowawayRedis) -> ThrowawayRedis:
    redis_process.ensure_running()
    return redis_process


# -- the service under gunicorn --------------------------------------------------------------


class Service:
    def __init__(self, base_url: str, log_path: Path, env: dict[str, str]) -> None:
        self.base_url = base_url
        self.log_path = log_path
        self.env = env

    def call(self, method: str, path: str, **kwargs) -> tuple[requests.Response, float]:
        """One bounded request; the response and how long it took."""
        start = time.monotonic()
        try:
            response = requests.request(
                method, self.base_url + path, timeout=CLIENT_TIMEOUT, **kwargs
            )
        except requests.Timeout:
            pytest.fail(f"{method} {path} hung for {CLIENT_TIMEOUT} s (no answer)")
        return response, time.monotonic() - start

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.call("GET", path, **kwargs)[0]

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.call("POST", path, **kwargs)[0]

    def worker_boots(self) -> int:
        """How many workers gunicorn has started so far (a restart or respawn adds one)."""
        return self.log_path.read_text().count("Booting worker")

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]


@contextmanager
def authsvc(
    tmp_path: Path, database_url: str, redis_url: str, **overrides: str
) -> Iterator[Service]:
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_DROP_PREFIXES) and key not in _DROP
    }
    metrics = tmp_path / "metrics"
    metrics.mkdir(exist_ok=True)
    env.update(
        AUTHSVC_ENV="production",
        AUTHSVC_SECRET_KEY=TEST_SECRET,
        AUTHSVC_ISSUER=f"http://127.0.0.1:{port}",
        AUTHSVC_RATELIMIT_ENABLED="false",
        AUTHSVC_INTROSPECTION_CLIENTS=f"{INTROSPECTION_ID}:{INTROSPECTION_SECRET}",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        PROMETHEUS_MULTIPROC_DIR=str(metrics),
        GUNICORN_GRACEFUL_TIMEOUT="5",
        WEB_CONCURRENCY="2",
        **FAST_ARGON2,
    )
    env.update(overrides)
    log_path = tmp_path / "gunicorn.log"
    with authsvc_gunicorn(env, port, log_path) as base_url:
        yield Service(base_url, log_path, env)


# -- helpers ---------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def credentials(username: str) -> dict[str, str]:
    return {"username": username, "password": PASSWORD}


def signup(service: Service, username: str) -> dict:
    response = service.post("/signup", json=credentials(username))
    assert response.status_code == 201, response.text
    return response.json()


def introspect(service: Service, token: str) -> tuple[requests.Response, float]:
    return service.call(
        "POST", "/introspect", data={"token": token}, auth=(INTROSPECTION_ID, INTROSPECTION_SECRET)
    )


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def assert_unavailable(response: requests.Response, elapsed: float, what: str) -> None:
    """503 problem+json `unavailable` with a numeric Retry-After, answered promptly."""
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text}"
    assert response.headers["Content-Type"].startswith("application/problem+json"), what
    body = response.json()
    assert (body["status"], body["code"]) == (503, "unavailable"), f"{what}: {body}"
    assert response.headers.get("Retry-After", "").isdigit(), f"{what}: {response.headers}"
    assert elapsed < PROMPT, f"{what} took {elapsed:.1f} s to answer 503"


def poll_until_ok(service: Service, method: str, path: str, **kwargs) -> requests.Response:
    """Repeat a request until 200; meanwhile only 503 is acceptable. Bounded by RECOVERY."""
    seen: list[int] = []

    def attempt() -> requests.Response | None:
        try:
            response = service.call(method, path, **kwargs)[0]
        except requests.ConnectionError:
            seen.append(0)
            return None
        seen.append(response.status_code)
        assert response.status_code in (200, 503), f"{method} {path}: {response.text}"
        return response if response.status_code == 200 else None

    try:
        return wait_for(attempt, RECOVERY, f"{method} {path} to answer 200", interval=0.25)
    except AssertionError as error:
        raise AssertionError(f"{error}; statuses seen: {seen}\n{service.log_tail()}") from None


# -- 1. PostgreSQL down ----------------------------------------------------------------------


def test_database_down_answers_503_promptly_and_recovers_without_restart(
    pg: ThrowawayPostgres, redis_server: ThrowawayRedis, tmp_path: Path
):
    database = pg.create_database()
    with authsvc(tmp_path, database, redis_server.url) as service:
        tokens = signup(service, "alice@example.com")
        access, refresh = bearer(tokens["access_token"]), bearer(tokens["refresh_token"])
        boots = service.worker_boots()

        pg.stop()  # fast shutdown: every pooled connection is cut
        try:
            alice, bob = credentials("alice@example.com"), credentials("bob@example.com")
            outage = [
                ("POST /login", service.call("POST", "/login", json=alice)),
                ("POST /signup", service.call("POST", "/signup", json=bob)),
                ("POST /refresh", service.call("POST", "/refresh", headers=refresh)),
                # Fail closed: the session cannot be checked, so the access token is not accepted.
                ("GET /me", service.call("GET", "/me", headers=access)),
                ("POST /introspect", introspect(service, tokens["access_token"])),
                ("GET /readyz", service.call("GET", "/readyz")),
            ]
            for what, (response, elapsed) in outage:
                assert_unavailable(response, elapsed, what)
            ready = outage[-1][1][0].json()
            assert ready["checks"]["database"] == "unavailable", ready
            assert service.get("/healthz").status_code == 200
        finally:
            pg.start()

        login = poll_until_ok(service, "POST", "/login", json=credentials("alice@example.com"))
        assert login.json()["user"]["username"] == "alice@example.com"
        ready = service.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"
        # The refresh that failed during the outage did not rotate: the token is still current.
        rotated = service.post("/refresh", headers=refresh)
        assert rotated.status_code == 200, rotated.text
        for _ in range(4):  # both workers, each on new connections
            me = service.get("/me", headers=bearer(rotated.json()["access_token"]))
            assert me.status_code == 200, me.text
        assert service.post("/signup", json=credentials("bob@example.com")).status_code == 201
        assert service.worker_boots() == boots, "a worker was restarted:\n" + service.log_tail()


def test_database_down_access_token_never_accepted(
    pg: ThrowawayPostgres, redis_server: ThrowawayRedis, tmp_path: Path
):
    """Scenario 4: with PostgreSQL stopped, however often and on whichever worker, never a 200."""
    database = pg.create_database()
    with authsvc(tmp_path, database, redis_server.url) as service:
        tokens = signup(service, "carol@example.com")
        assert service.get("/me", headers=bearer(tokens["access_token"])).status_code == 200
        pg.stop()
        try:
            for attempt in range(8):
                response, elapsed = service.call(
                    "GET", "/me", headers=bearer(tokens["access_token"])
                )
                assert_unavailable(response, elapsed, f"GET /me #{attempt}")
                response, elapsed = introspect(service, tokens["access_token"])
                assert_unavailable(response, elapsed, f"POST /introspect #{attempt}")
        finally:
            pg.start()


def test_database_down_jwks_and_discovery_served_from_key_cache(
    pg: ThrowawayPostgres, redis_server: ThrowawayRedis, tmp_path: Path
):
    database = pg.create_database()
    # One worker, so the cache warmed below is the one asked during the outage. A max-age of 8 s
    # makes the in-process cache go stale after 2 s; the outage is checked inside max-age.
    with authsvc(
        tmp_path, database, redis_server.url, WEB_CONCURRENCY="1", AUTHSVC_JWKS_MAX_AGE="8"
    ) as service:
        jwks = service.get("/.well-known/jwks.json")
        assert jwks.status_code == 200, jwks.text
        discovery = service.get("/.well-known/openid-configuration")
        assert discovery.status_code == 200, discovery.text
        warmed = time.monotonic()
        pg.stop()
        try:
            time.sleep(max(0.0, warmed + 2.5 - time.monotonic()))  # the cache is now stale
            during, elapsed = service.call("GET", "/.well-known/jwks.json")
            assert during.status_code == 200, f"JWKS: {during.status_code} {during.text}"
            assert elapsed < PROMPT
            assert during.json() == jwks.json()
            assert during.headers["Cache-Control"].startswith("public, max-age=")
            doc, elapsed = service.call("GET", "/.well-known/openid-configuration")
            assert doc.status_code == 200, f"discovery: {doc.status_code} {doc.text}"
            assert elapsed < PROMPT
            assert doc.json()["issuer"] == discovery.json()["issuer"]
            assert doc.json()["jwks_uri"] == discovery.json()["jwks_uri"]
            ready, _ = service.call("GET", "/readyz")
            assert ready.status_code == 503
        finally:
            pg.start()


def test_database_restarted_while_idle_next_request_succeeds(
    pg: ThrowawayPostgres, redis_server: ThrowawayRedis, tmp_path: Path
):
    """A restart (or failover) nobody noticed: the next request must not fail."""
    database = pg.create_database()
    with authsvc(tmp_path, database, redis_server.url, WEB_CONCURRENCY="1") as service:
        signup(service, "ivy@example.com")  # the worker's pool now holds a connection
        pg.stop()
        pg.start()  # no request in between: nothing has told the pool
        login, elapsed = service.call("POST", "/login", json=credentials("ivy@example.com"))
        assert login.status_code == 200, f"first request after the restart: {login.text}"
        assert elapsed < PROMPT
        ready = service.get("/readyz")
        assert ready.status_code == 200, ready.text


# -- 2. Redis down ---------------------------------------------------------------------------


def test_redis_down_token_checks_fall_back_to_the_database_and_logout_still_revokes(
    pg: ThrowawayPostgres, redis_server: ThrowawayRedis, tmp_path: Path
):
    """DESIGN §3: Redis unreachable, token checks fall back to the database (a live session is
    served, a revoked one refused, never the other way round), and a logout or revocation still
    reaches the database; after Redis returns, what was revoked stays revoked."""
    database = pg.create_database()
    with authsvc(tmp_path, database, redis_server.url) as service:
        tokens = signup(service, "dave@example.com")
        access = bearer(tokens["access_token"])
        # A second session logged out before the outage: its revocation was broadcast before
        # Redis went away, and the session row stays revoked, so the token must stay refused.
        other = service.post("/login", json=credentials("dave@example.com")).json()
        assert service.post("/logout", headers=bearer(other["access_token"])).status_code == 204
        third = service.post("/login", json=credentials("dave@example.com")).json()
        fourth = service.post("/login", json=credentials("dave@example.com")).json()
        assert service.get("/me", headers=access).status_code == 200
        boots = service.worker_boots()

        redis_server.stop()  # SIGKILL
        try:
            for attempt in range(6):  # spread over both workers
                response, elapsed = service.call("GET", "/me", headers=access)
                assert response.status_code == 200 and elapsed < PROMPT, (attempt, response.text)
                response, _ = service.call("GET", "/me", headers=bearer(other["access_token"]))
                assert response.status_code == 401, f"a revoked session accepted #{attempt}"
                response, _ = introspect(service, tokens["access_token"])
                assert response.json()["active"] is True
                response, _ = introspect(service, other["access_token"])
                assert response.json() == {"active": False}
            # Logging out and revoking a session reach the database while Redis is down.
            response, elapsed = service.call(
                "POST", "/logout", headers=bearer(third["access_token"])
            )
            assert response.status_code == 204 and elapsed < PROMPT, response.text
            sid = claims(fourth["access_token"])["sid"]
            response, _ = service.call("DELETE", f"/sessions/{sid}", headers=access)
            assert response.status_code == 204, response.text
            for token in (third, fourth):
                response, _ = service.call("GET", "/me", headers=bearer(token["access_token"]))
                assert response.status_code == 401
            response, elapsed = service.call("GET", "/readyz")
            assert_unavailable(response, elapsed, "GET /readyz")
            assert response.json()["checks"]["redis"] == "unavailable"
            assert service.get("/healthz").status_code == 200
        finally:
            redis_server.start()  # same port, empty

        for token in (other, third, fourth):  # revoked stays revoked after the outage
            assert service.get("/me", headers=bearer(token["access_token"])).status_code == 401
            refreshed = service.post("/refresh", headers=bearer(token["refresh_token"]))
            assert refreshed.status_code == 401
        assert service.get("/me", headers=access).status_code == 200
        ready = service.get("/readyz")
        assert ready.status_code == 200, ready.text

        # A hung Redis (process stopped, sockets open): the 1 s socket timeout bounds the wait.
        with redis_server.frozen():
            response, elapsed = service.call("GET", "/me", headers=access)
            assert response.status_code == 200 and elapsed < PROMPT, response.text
        assert service.worker_boots() == boots, "a worker was restarted:\n" + service.log_tail()


def test_redis_down_throttled_endpoints_fail_closed(
    pg: ThrowawayPostgres, redis_server: ThrowawayRedis, tmp_path: Path
):
    """With throttling on, the counters live in Redis: no Redis, no unthrottled request."""
    database = pg.create_database()
    with authsvc(tmp_path, database, redis_server.url, AUTHSVC_RATELIMIT_ENABLED="true") as service:
        tokens = signup(service, "gina@example.com")
        gina, hank = credentials("gina@example.com"), credentials("hank@example.com")
        refresh = bearer(tokens["refresh_token"])
        redis_server.stop()
        try:
            # A refresh token's check needs only the database: this 503 is the limiter's.
            outage = [
                ("POST /login", service.call("POST", "/login", json=gina)),
                ("POST /signup", service.call("POST", "/signup", json=hank)),
                ("POST /refresh", service.call("POST", "/refresh", headers=refresh)),
            ]
            for what, (response, elapsed) in outage:
                assert_unavailable(response, elapsed, what)
        finally:
            redis_server.start()
        poll_until_ok(service, "POST", "/login", json=gina)
        assert service.post("/refresh", headers=refresh).status_code == 200
        assert service.post("/signup", json=hank).status_code == 201


# -- 3. a worker killed in the middle of /refresh --------------------------------------------


def _waiting_backend(monitor: psycopg.Connection, database: str, wait_event: str) -> tuple | None:
    """(backend pid, client port) of the backend of ``database`` waiting on ``wait_event``."""
    return monitor.execute(
        "SELECT pid, client_port FROM pg_stat_activity"
        " WHERE datname = %s AND wait_event = %s AND pid <> pg_backend_pid()",
        (database, wait_event),
    ).fetchone()


def _backend_gone(monitor: psycopg.Connection, pid: int) -> bool:
    return (
        monitor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None
    )


def _generation(monitor: psycopg.Connection, sid: str) -> int:
    return monitor.execute("SELECT generation FROM sessions WHERE id = %s", (sid,)).fetchone()[0]


def _kill_worker_behind(pg: ThrowawayPostgres, client_port: int) -> int:
    """SIGKILL the gunicorn worker that owns the database connection from ``client_port``."""
    pid = pid_of_connection(client_port, pg.port)
    assert pid is not None and pid != os.getpid(), f"no process owns port {client_port}"
    master = parent_pid(pid)
    assert "gunicorn" in command_line(master), command_line(master)
    os.kill(pid, signal.SIGKILL)
    return pid


def _assert_connection_lost(future: Future) -> None:
    error = future.exception(timeout=10)
    assert isinstance(error, requests.ConnectionError), f"the client got {error or future.result()}"


def _assert_one_live_generation(
    service: Service, monitor: psycopg.Connection, sid: str, first: str, retried: dict
) -> None:
    """After the retry: the previous token (in grace) gets the current generation again without a
    bump; once the session moves on, the first token is reuse and revokes the session."""
    assert claims(retried["refresh_token"])["gen"] == 1
    assert claims(retried["access_token"])["sid"] == sid
    again = service.post("/refresh", headers=bearer(first))
    assert again.status_code == 200, again.text
    assert claims(again.json()["refresh_token"])["gen"] == 1
    assert _generation(monitor, sid) == 1
    newer = service.post("/refresh", headers=bearer(retried["refresh_token"]))
    assert newer.status_code == 200, newer.text
    assert claims(newer.json()["refresh_token"])["gen"] == 2
    assert _generation(monitor, sid) == 2
    reuse = service.post("/refresh", headers=bearer(first))
    assert reuse.status_code == 401 and reuse.json()["code"] == "token_revoked", reuse.text
    revoked = service.post("/refresh", headers=bearer(newer.json()["refresh_token"]))
    assert revoked.status_code == 401, revoked.text
    me = service.get("/me", headers=bearer(newer.json()["access_token"]))
    assert me.status_code == 401, me.text


def test_worker_killed_while_rotation_waits_retry_succeeds(
    pg: ThrowawayPostgres, redis_server: ThrowawayRedis, tmp_path: Path
):
    """The rotation's UPDATE waits on a row lock we hold; the worker dies before it returns.

    The rotation is one UPDATE in autocommit, so the orphaned backend completes it once the lock
    is released: the client lost the response, exactly as when a COMMIT's answer is lost. Its
    retry with the old token, within the grace window, gets a pair for the new generation.
    """
    database = pg.create_database()
    dbname = database.rsplit("/", 1)[1]
    with (
        authsvc(tmp_path, database, redis_server.url) as service,
        ThreadPoolExecutor(max_workers=1) as pool,
        psycopg.connect(database, autocommit=True, connect_timeout=5) as monitor,
        psycopg.connect(database, connect_timeout=5) as locker,
    ):
        tokens = signup(service, "erin@example.com")
        sid = claims(tokens["refresh_token"])["sid"]
        locker.execute("SELECT id FROM sessions WHERE id = %s FOR UPDATE", (sid,))
        try:
            future = pool.submit(
                service.call, "POST", "/refresh", headers=bearer(tokens["refresh_token"])
            )
            backend, client_port = wait_for(
                lambda: (
                    _waiting_backend(monitor, dbname, "transactionid")
                    or _waiting_backend(monitor, dbname, "tuple")
                ),
                10,
                "the refresh to wait on the session row lock",
            )
            _kill_worker_behind(pg, client_port)
            _assert_connection_lost(future)
        finally:
            locker.rollback()
        # The orphaned backend finishes its UPDATE (its own transaction), then exits.
        wait_for(lambda: _backend_gone(monitor, backend), 10, "the orphaned backend to exit")
        assert _generation(monitor, sid) == 1

        retry = service.post("/refresh", headers=bearer(tokens["refresh_token"]))
        assert retry.status_code == 200, retry.text
        assert _generation(monitor, sid) == 1
        _assert_one_live_generation(service, monitor, sid, tokens["refresh_token"], retry.json())


def _commits_blocked(
    admin: psycopg.Connection, probe: psycopg.Connection, pool: ThreadPoolExecutor
) -> Future:
    """Write through ``probe`` until a COMMIT waits for the standby; that write's future."""
    deadline = time.monotonic() + 10
    query = "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event = 'SyncRep'"
    while time.monotonic() < deadline:
        write = pool.submit(probe.execute, "INSERT INTO faults_probe VALUES (1)")
        while not write.done() and time.monotonic() < deadline:
            if admin.execute(query, (probe.info.backend_pid,)).fetchone():
                return write
            time.sleep(0.05)
        if write.done():
            write.result()  # the setting was not read yet: try again (or raise the probe's error)
    raise AssertionError("commits never waited for the synchronous standby")


def test_worker_killed_after_rotation_commits_retry_gets_current_generation(
    pg: ThrowawayPostgres, redis_server: ThrowawayRedis, tmp_path: Path
):
    """The rotation commits but the answer is lost: COMMIT waits for a synchronous standby that
    does not exist (the row is already written in WAL), and the worker dies while it waits."""
    database = pg.create_database()
    dbname = database.rsplit("/", 1)[1]
    with (
        authsvc(tmp_path, database, redis_server.url) as service,
        ThreadPoolExecutor(max_workers=2) as pool,
        pg.connect(autocommit=True) as admin,
        psycopg.connect(database, autocommit=True, connect_timeout=5) as monitor,
        pg.connect(autocommit=True) as probe,
    ):
        tokens = signup(service, "frank@example.com")
        sid = claims(tokens["refresh_token"])["sid"]
        admin.execute("CREATE TABLE IF NOT EXISTS faults_probe (n int)")
        try:
            admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'faults_no_such_standby'")
            admin.execute("SELECT pg_reload_conf()")
            # Commits block once the checkpointer has read the new setting: see one block.
            probe_done = _commits_blocked(admin, probe, pool)
            future = pool.submit(
                service.call, "POST", "/refresh", headers=bearer(tokens["refresh_token"])
            )
            backend, client_port = wait_for(
                lambda: _waiting_backend(monitor, dbname, "SyncRep"),
                10,
                "the refresh's COMMIT to wait for the standby",
            )
            _kill_worker_behind(pg, client_port)
            _assert_connection_lost(future)
        finally:
            admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
            admin.execute("SELECT pg_reload_conf()")
        probe_done.result(timeout=10)
        wait_for(lambda: _backend_gone(monitor, backend), 10, "the orphaned backend to exit")
        # The rotation committed; the client never saw its answer.
        assert _generation(monitor, sid) == 1

        retry = service.post("/refresh", headers=bearer(tokens["refresh_token"]))
        assert retry.status_code == 200, retry.text
        assert _generation(monitor, sid) == 1  # re-issued in the grace window, not bumped
        _assert_one_live_generation(service, monitor, sid, tokens["refresh_token"], retry.json())


# -- 4. the revocation broadcast -------------------------------------------------------------

# Long enough that only the broadcast (or the subscription's health) can explain a refusal.
LONG_CACHE = {"AUTHSVC_SESSION_CACHE_SECONDS": "30", "WEB_CONCURRENCY": "1"}
SHARED_ISSUER = "https://auth.replicas.test"
# DESIGN §3: a revocation on any replica is refused on every replica within this.
BROADCAST_DEADLINE = 0.1


@contextmanager
def replica(tmp_path: Path, name: str, database: str, redis_url: str) -> Iterator[Service]:
    """One gunicorn replica of a shared deployment: same database, Redis and issuer; its own
    metrics listener (the session-state counters are read from it)."""
    folder = tmp_path / name
    folder.mkdir()
    port = free_port()
    with authsvc(
        folder,
        database,
        redis_url,
        AUTHSVC_ISSUER=SHARED_ISSUER,
        AUTHSVC_METRICS_BIND=f"127.0.0.1:{port}",
        **LONG_CACHE,
    ) as service:
        service.metrics_url = f"http://127.0.0.1:{port}/metrics"
        yield service


def session_reads(service: Service) -> dict[str, float]:
    """authsvc_session_state_reads_total by source: cache, database, bypass."""
    text = requests.get(service.metrics_url, timeout=CLIENT_TIMEOUT).text
    reads = {"cache": 0.0, "database": 0.0, "bypass": 0.0}
    for line in text.splitlines():
        if line.startswith("authsvc_session_state_reads_total{"):
            labels, value = line.rsplit(" ", 1)
            source = labels.split('source="', 1)[1].split('"', 1)[0]
            reads[source] = float(value)
    return reads


def me_from(service: Service, token: str) -> tuple[int, str]:
    """GET /me, and where the replica found the session's state for it."""
    before = session_reads(service)
    response = service.get("/me", headers=bearer(token))
    after = session_reads(service)
    changed = [source for source in after if after[source] != before[source]]
    assert len(changed) == 1, (before, after)
    return response.status_code, changed[0]


def warm(service: Service, token: str) -> None:
    """Until the replica answers this token's /me from its cache (subscribed, row stored)."""
    wait_for(lambda: me_from(service, token) == (200, "cache"), PROMPT, "a /me answered from cache")


def revoke_in_database(database_url: str, token: str) -> None:
    """Revoke a session behind every replica's back: no announcement is made."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(
            "UPDATE sessions SET revoked_at = now(), revoked_reason = 'test' WHERE id = %s",
            (claims(token)["sid"],),
        )


def refused_within(service: Service, token: str, since: float) -> float:
    """Poll /me until 401; how long after ``since`` it was first refused (bounded)."""
    while True:
        response = service.get("/me", headers=bearer(token))
        elapsed = time.monotonic() - since
        if response.status_code == 401:
            return elapsed
        assert response.status_code == 200, response.text
        assert elapsed < PROMPT, "still accepted"


def test_revocation_on_one_replica_is_refused_on_the_other_within_100_ms(
    pg: ThrowawayPostgres, redis_server: ThrowawayRedis, tmp_path: Path
):
    database = pg.create_database()
    with (
        replica(tmp_path, "a", database, redis_server.url) as a,
        replica(tmp_path, "b", database, redis_server.url) as b,
    ):
        tokens = signup(a, "erin@example.com")["access_token"]
        frank = signup(a, "frank@example.com")["access_token"]
        for service in (a, b):
            warm(service, tokens)
            warm(service, frank)

        response = a.post("/logout", headers=bearer(tokens))
        assert response.status_code == 204, response.text
        logged_out = time.monotonic()
        elapsed = refused_within(b, tokens, logged_out)
        assert elapsed <= BROADCAST_DEADLINE, f"replica b accepted a logout for {elapsed:.3f} s"
        assert introspect(b, tokens)[0].json() == {"active": False}
        assert a.get("/me", headers=bearer(tokens)).status_code == 401

        # An operator's CLI is another process: its disable reaches both replicas the same way.
        output = flask_command(a.env, "users", "disable", "frank@example.com")
        assert "disabled" in output
        disabled = time.monotonic()
        for service in (a, b):
            elapsed = refused_within(service, frank, disabled)
            assert elapsed <= BROADCAST_DEADLINE, f"accepted {elapsed:.3f} s after the disable"
        # The other replica's cache was warm, and is again for what is still live.
        assert me_from(b, signup(b, "gus@example.com")["access_token"])[0] == 200


def test_redis_frozen_every_check_reads_the_database_and_the_thaw_trusts_nothing_old(
    pg: ThrowawayPostgres, redis_server: ThrowawayRedis, tmp_path: Path
):
    """No healthy subscription (a hung Redis: no answer to its pings), no cache: a session
    revoked behind the service's back is refused on the very next request. After the thaw,
    what was cached before the freeze is not trusted again."""
    database = pg.create_database()
    with replica(tmp_path, "a", database, redis_server.url) as service:
        live = signup(service, "hana@example.com")["access_token"]
        doomed = service.post("/login", json=credentials("hana@example.com")).json()
        thawed = service.post("/login", json=credentials("hana@example.com")).json()
        for token in (live, doomed["access_token"], thawed["access_token"]):
            warm(service, token)

        with redis_server.frozen():
            wait_for(
                lambda: me_from(service, live) == (200, "bypass"),
                PROMPT,
                "the subscription known unhealthy",
            )
            revoke_in_database(database, doomed["access_token"])
            for _ in range(5):
                assert me_from(service, doomed["access_token"]) == (401, "bypass")
                assert me_from(service, live) == (200, "bypass")
            revoke_in_database(database, thawed["access_token"])

        wait_for(lambda: me_from(service, live) == (200, "cache"), PROMPT, "trusted again")
        assert service.get("/me", headers=bearer(thawed["access_token"])).status_code == 401


def test_redis_restarted_mid_run_leaves_no_stale_cache(
    pg: ThrowawayPostgres, redis_server: ThrowawayRedis, tmp_path: Path
):
    """Announcements made while Redis is away are lost; what each replica cached before must
    not outlive the outage."""
    database = pg.create_database()
    with (
        replica(tmp_path, "a", database, redis_server.url) as a,
        replica(tmp_path, "b", database, redis_server.url) as b,
    ):
        live = signup(a, "ines@example.com")["access_token"]
        lost = a.post("/login", json=credentials("ines@example.com")).json()
        logged_out = a.post("/login", json=credentials("ines@example.com")).json()
        for service in (a, b):
            for token in (live, lost["access_token"], logged_out["access_token"]):
                warm(service, token)

        redis_server.stop()  # SIGKILL
        try:
            # One revocation behind the service's back, one by a logout whose broadcast fails.
            revoke_in_database(database, lost["access_token"])
            response = a.post("/logout", headers=bearer(logged_out["access_token"]))
            assert response.status_code == 204, response.text
        finally:
            redis_server.start()

        for service in (a, b):
            wait_for(lambda s=service: me_from(s, live) == (200, "cache"), RECOVERY, "resubscribed")
            for token in (lost, logged_out):
                status, _source = me_from(service, token["access_token"])
                assert status == 401, "a revocation made during the outage was not seen"
