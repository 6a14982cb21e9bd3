"""Fixtures: a fresh database per test, on SQLite and on PostgreSQL + Redis.

Every test that takes ``app`` (or ``client``, ``make_app``...) runs twice: on a SQLite file and on
a real PostgreSQL database with a real Redis. When those servers are unreachable the PostgreSQL
run is skipped with the reason, unless AUTHSVC_TEST_REQUIRE_SERVICES=1 (CI), where it fails.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from authsvc import create_app
from authsvc.extensions import db
from tests.support.servers import Service, service_on
from tests.support.settings import (
    POSTGRES_URL,
    REDIS_URL,
    TABLES,
    AppFactory,
    base_config,
    migrate,
    unavailable,
    with_database,
)
from tests.support.smtp import MailServer


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "authsvc.db"
    migrate(create_app({**base_config(), "DATABASE_URL": f"sqlite:///{path}"}))
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway, migrated database on the PostgreSQL server, dropped at the end."""
    name = f"authsvc_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as error:
        unavailable(f"PostgreSQL at {POSTGRES_URL} is unreachable: {error}".strip())
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(POSTGRES_URL, name)
    try:
        migrate(create_app({**base_config(), "DATABASE_URL": url}))
        yield url
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        unavailable(f"Redis at {REDIS_URL} is unreachable: {error}")
    return REDIS_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_config(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Connection settings for a fresh, migrated database for this test."""
    if backend == "sqlite":
        path = tmp_path / "authsvc.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return {"DATABASE_URL": f"sqlite:///{path}"}
    url = request.getfixturevalue("postgres_url")
    redis_url = request.getfixturevalue("redis_url")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
    redis.Redis.from_url(redis_url).flushdb()
    return {"DATABASE_URL": url, "REDIS_URL": redis_url}


@pytest.fixture
def make_app(database_config: dict[str, str]) -> Iterator[AppFactory]:
    """``make_app(**overrides)``: an app on this test's database (several share it)."""
    apps: list[Flask] = []

    def factory(**overrides: str) -> Flask:
        app = create_app({**base_config(), **database_config, **overrides})
        app.testing = True
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["authsvc"].outbox.close()
        app.extensions["authsvc"].session_states.close()
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def start_service(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[..., AbstractContextManager[Service]]:
    """``with start_service(**settings) as service:`` authsvc under gunicorn on this test's
    backend (SQLite: the embedded default; PostgreSQL + Redis: production, two workers), on a
    fresh database."""

    def start(**settings: str) -> AbstractContextManager[Service]:
        if backend == "sqlite":
            return service_on("sqlite", tmp_path, **settings)
        url = request.getfixturevalue("postgres_url")
        redis_url = request.getfixturevalue("redis_url")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
        redis.Redis.from_url(redis_url).flushdb()
        return service_on("postgres", tmp_path, database_url=url, redis_url=redis_url, **settings)

    return start


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    """A real SMTP server on loopback (aiosmtpd), recording every message it accepts."""
    server = MailServer().start()
    yield server
    server.stop()


@pytest.fixture
def mail_app(make_app: AppFactory, mail_server: MailServer) -> Flask:
    """An app that mails through ``mail_server`` (its sender thread starts with the first
    request)."""
    return make_app(AUTHSVC_SMTP_URL=mail_server.url)


@pytest.fixture
def mail_client(mail_app: Flask) -> FlaskClient:
    return mail_app.test_client()
