"""Real servers for end-to-end tests: gunicorn running the service, static file servers.

Every wait is bounded; every server is stopped when its ``with`` block ends.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from flask import Flask

from authsvc import create_app
from tests.support.settings import TEST_SECRET, base_config

ROOT = Path(__file__).resolve().parents[2]  # tests/support/servers.py -> the repository
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flask_command(env: Mapping[str, str], *args: str, timeout: float = 120) -> str:
    """Run `flask --app wsgi ...` as the deployment does; its stdout, or fail with stderr."""
    result = subprocess.run(
        [str(BIN / "flask"), "--app", "wsgi", *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"flask {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def wait_until_healthy(
    url: str, process: subprocess.Popen, log_path: Path, limit: float = 60
) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            if requests.get(url, timeout=3).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet, or workers still booting (read timeout)
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{url} did not become healthy:\n{log_path.read_text()}")
        time.sleep(0.2)


@contextmanager
def running(
    command: list[str], env: Mapping[str, str], health_url: str, log_path: Path, cwd: Path = ROOT
) -> Iterator[subprocess.Popen]:
    """Start ``command``, wait for ``health_url``, and stop it (SIGTERM, then SIGKILL)."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until_healthy(health_url, process, log_path)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def authsvc_gunicorn(env: Mapping[str, str], port: int, log_path: Path) -> Iterator[str]:
    """Migrate, then serve with the command line `make run` and the containers use."""
    env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}"}
    flask_command(env, "db", "upgrade")
    base_url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"]
    with running(command, env, f"{base_url}/healthz", log_path):
        yield base_url


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def static_files(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class Service:
    """authsvc under gunicorn for a test: its URL, the settings it runs with, its log."""

    def __init__(self, base_url: str, env: Mapping[str, str], log_path: Path) -> None:
        self.base_url = base_url
        self.env = dict(env)
        self.log_path = log_path

    def url(self, path: str) -> str:
        return self.base_url + path

    def logs(self) -> str:
        return self.log_path.read_text()


@contextmanager
def service_on(
    backend: str,
    tmp_path: Path,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    **settings: str,
) -> Iterator[Service]:
    """gunicorn on ``backend``: "sqlite" is the embedded default (development, one process, no
    Redis); "postgres" is production with ``database_url``, ``redis_url`` and two workers.
    ``settings`` are extra AUTHSVC_* variables (the argon2 cost defaults to a cheap one)."""
    port = free_port()
    metrics = tmp_path / "metrics"
    metrics.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "AUTHSVC_ISSUER": f"http://127.0.0.1:{port}",
        "AUTHSVC_ARGON2_MEMORY_KIB": "1024",
        "AUTHSVC_ARGON2_TIME_COST": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    if backend == "sqlite":
        env.update(AUTHSVC_ENV="development", DATABASE_URL=f"sqlite:///{tmp_path}/authsvc.db")
        env.pop("REDIS_URL", None)
    else:
        assert database_url is not None and redis_url is not None
        env.update(
            AUTHSVC_ENV="production",
            AUTHSVC_SECRET_KEY=TEST_SECRET,
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            WEB_CONCURRENCY="2",
        )
    env.update(settings)
    log_path = tmp_path / "gunicorn.log"
    with authsvc_gunicorn(env, port, log_path) as base_url:
        yield Service(base_url, env, log_path)


def app_beside(service: Service, **overrides: str) -> Flask:
    """An in-process app on the database (and Redis) a served instance uses: an operator's."""
    config = {**base_config(), "DATABASE_URL": service.env["DATABASE_URL"], **overrides}
    if "REDIS_URL" in service.env:
        config["REDIS_URL"] = service.env["REDIS_URL"]
    return create_app(config)
