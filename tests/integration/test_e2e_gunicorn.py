"""End to end under real gunicorn, with the command lines `make run` and the deployment use.

The downstream check is what the README tells other services to do: from the issuer URL alone,
read the discovery document, fetch keys with PyJWT's PyJWKClient, verify typ, iss, aud and exp.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import psycopg
import pytest
import requests

from tests.support.helpers import PASSWORD
from tests.support.servers import ROOT, authsvc_gunicorn, free_port
from tests.support.settings import TABLES, TEST_SECRET

pytestmark = pytest.mark.slow


class Server:
    def __init__(self, base_url: str, log_path: Path, metrics_url: str) -> None:
        self.base_url = base_url
        self.log_path = log_path
        self.metrics_url = metrics_url

    def url(self, path: str) -> str:
        return self.base_url + path

    def logs(self) -> str:
        return self.log_path.read_text()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def server(request, tmp_path) -> Iterator[Server]:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "AUTHSVC_ISSUER": f"http://127.0.0.1:{port}",
        "AUTHSVC_METRICS_BIND": f"127.0.0.1:{metrics_port}",
        "AUTHSVC_ARGON2_MEMORY_KIB": "1024",
        "AUTHSVC_ARGON2_TIME_COST": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    (tmp_path / "metrics").mkdir()
    if request.param == "sqlite":
        # The embedded default: development, SQLite, no Redis, one process.
        env.update(AUTHSVC_ENV="development", DATABASE_URL=f"sqlite:///{tmp_path}/authsvc.db")
        env.pop("REDIS_URL", None)
    else:
        database = request.getfixturevalue("postgres_url")
        env.update(
            AUTHSVC_ENV="production",
            AUTHSVC_SECRET_KEY=TEST_SECRET,
            DATABASE_URL=database,
            REDIS_URL=request.getfixturevalue("redis_url"),
            WEB_CONCURRENCY="2",
        )
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
    log_path = tmp_path / "gunicorn.log"
    with authsvc_gunicorn(env, port, log_path) as base_url:
        yield Server(base_url, log_path, f"http://127.0.0.1:{metrics_port}/metrics")


def downstream_verify(issuer: str, token: str) -> dict:
    """A downstream service's whole configuration is `issuer`."""
    discovery = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=5).json()
    assert discovery["issuer"] == issuer
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt":
        raise jwt.InvalidTokenError("not an access token")
    signing_key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        signing_key,
        algorithms=discovery["id_token_signing_alg_values_supported"],
        audience=discovery["access_token_audience"],
        issuer=issuer,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )


def healthz_count(server: Server) -> float:
    metrics = requests.get(server.metrics_url, timeout=5).text
    series = 'authsvc_http_requests_total{endpoint="/healthz",method="GET",status="200"}'
    rows = [row for row in metrics.splitlines() if row.startswith(series + " ")]
    assert len(rows) == 1, metrics[:2000]
    return float(rows[0].split()[-1])


def test_full_flow_and_downstream_verification(server: Server):
    credentials = {"username": "e2e@example.com", "password": PASSWORD}
    response = requests.post(server.url("/signup"), json=credentials, timeout=10)
    assert response.status_code == 201, response.text
    tokens = response.json()

    claims = downstream_verify(server.base_url, tokens["access_token"])
    assert claims["sub"] == tokens["user"]["id"]
    with pytest.raises(jwt.InvalidTokenError):
        downstream_verify(server.base_url, tokens["refresh_token"])

    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (
        requests.get(server.url("/me"), headers=auth, timeout=5).json()["username"]
        == "e2e@example.com"
    )

    login = requests.post(server.url("/login"), json=credentials, timeout=10)
    assert login.status_code == 200
    rotated = requests.post(
        server.url("/refresh"),
        headers={"Authorization": f"Bearer {login.json()['refresh_token']}"},
        timeout=5,
    )
    assert rotated.status_code == 200
    new_auth = {"Authorization": f"Bearer {rotated.json()['access_token']}"}

    # Several requests so both workers (PostgreSQL run) see the logout.
    assert requests.post(server.url("/logout"), headers=auth, timeout=5).status_code == 204
    for _ in range(6):
        denied = requests.get(server.url("/me"), headers=auth, timeout=5)
        assert denied.status_code == 401
        assert denied.json()["code"] == "token_revoked"
        assert requests.get(server.url("/me"), headers=new_auth, timeout=5).status_code == 200

    ready = requests.get(server.url("/readyz"), timeout=5)
    assert ready.status_code == 200, ready.text

    # Metrics are summed over every worker (multiprocess mode) by the master's own listener
    # (AUTHSVC_METRICS_BIND): 40 requests spread over the workers show up as exactly 40 more.
    # The public listener does not serve them.
    assert requests.get(server.url("/metrics"), timeout=5).status_code == 404
    before = healthz_count(server)
    for _ in range(40):
        requests.get(server.url("/healthz"), timeout=5)
    assert {healthz_count(server) - before for _ in range(4)} == {40}

    logs = server.logs()
    assert '"event": "request"' in logs and '"event": "signup"' in logs
    for secret in (
        PASSWORD,
        tokens["access_token"],
        tokens["refresh_token"],
        rotated.json()["refresh_token"],
    ):
        assert secret not in logs


def test_an_oversized_body_closes_the_connection_and_the_next_request_succeeds(server: Server):
    """A 413 sent before the body is read says Connection: close (RFC 9112 §9.6), so a client
    that reuses connections never sends its next request into a connection about to die."""
    with requests.Session() as session:
        small = session.post(server.url("/login"), json={"username": "x", "password": "y" * 12})
        assert small.status_code == 401
        assert small.headers["Connection"].lower() == "keep-alive"  # ordinary requests reuse
        for _ in range(5):
            big = session.post(
                server.url("/login"),
                data=b'{"username": "' + b"a" * (2 * 1024 * 1024) + b'"}',
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            assert big.status_code == 413
            assert big.headers["Connection"].lower() == "close"
            assert session.get(server.url("/healthz"), timeout=10).status_code == 200


def test_gunicorn_knows_the_apps_body_limit():
    from authsvc.api.body import MAX_BODY_BYTES

    text = (ROOT / "gunicorn.conf.py").read_text()
    assert f"MAX_BODY_BYTES = {MAX_BODY_BYTES // 1024} * 1024" in text


def _gunicorn_processes(base_url: str) -> tuple[int, list[int]]:
    """The master and worker pids of the gunicorn serving ``base_url`` (from /proc)."""
    bind = f"GUNICORN_BIND={base_url.removeprefix('http://')}".encode()
    pids = {}
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if bind in environ.read_bytes().split(b"\0"):
                status = environ.with_name("status").read_text()
                parent = next(line for line in status.splitlines() if line.startswith("PPid:"))
                pids[int(environ.parent.name)] = int(parent.split()[1])
        except OSError:
            continue  # gone, or not ours to read
    master = next(pid for pid, parent in pids.items() if parent not in pids)
    return master, [pid for pid, parent in pids.items() if parent == master]


def _sockets_to(port: int, pids: list[int]) -> dict[int, set[int]]:
    """For each pid, the inodes of its TCP sockets connected to ``port`` on this machine."""
    remote = f":{port:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[2].endswith(remote):
                inodes.add(int(fields[9]))
    owned: dict[int, set[int]] = {}
    for pid in pids:
        found = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                found.add(int(target[8:-1]))
        owned[pid] = found
    return owned


def test_each_worker_forked_from_the_preloaded_master_has_its_own_connections(server: Server):
    """gunicorn.conf.py preloads the app in the master; no database connection may be shared
    across the fork (two processes on one socket interleave their protocol)."""
    master, workers = _gunicorn_processes(server.base_url)
    answer = requests.post(
        server.url("/signup"), json={"username": "preload", "password": PASSWORD}, timeout=30
    )
    assert answer.status_code == 201, answer.text
    headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    for _ in range(40):  # new connections, spread over the workers; each /me reads a session
        assert requests.get(server.url("/me"), headers=headers, timeout=10).status_code == 200
    database = os.environ.get("AUTHSVC_TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
    owned = _sockets_to(urlsplit(database).port or 5432, [master, *workers])
    assert not owned[master], "the master holds database connections its workers inherited"
    every = [inode for pid in workers for inode in owned[pid]]
    assert len(every) == len(set(every)), owned  # no socket in two workers
