"""What the tests share about their environment: the servers, the test app's configuration, and
how to migrate a database. The root conftest builds its fixtures on these."""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import pytest
from flask import Flask
from flask_migrate import upgrade

from authsvc.cli import bind_migrations
from authsvc.extensions import db

REQUIRE_SERVICES = os.environ.get("AUTHSVC_TEST_REQUIRE_SERVICES") == "1"
POSTGRES_URL = os.environ.get(
    "AUTHSVC_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("AUTHSVC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

TEST_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
ISSUER = "https://auth.test"
# Tests other than those of hashing itself use a cheap argon2 cost (DESIGN allows it).
FAST_ARGON2 = {"AUTHSVC_ARGON2_MEMORY_KIB": "64", "AUTHSVC_ARGON2_TIME_COST": "1"}
TABLES = (
    "audit_events",
    "outbox",
    "one_time_tokens",
    "challenges",
    "recovery_codes",
    "factors",
    "sessions",
    "users",
    "signing_keys",
)

AppFactory = Callable[..., Flask]


def base_config() -> dict[str, str]:
    return {
        "AUTHSVC_ENV": "production",
        "AUTHSVC_SECRET_KEY": TEST_SECRET,
        "AUTHSVC_ISSUER": ISSUER,
        # Tests make many requests from one address; tests/security/test_throttling.py turns it on.
        "AUTHSVC_RATELIMIT_ENABLED": "false",
        # One mail per address and purpose a minute would hold up tests that mail twice; the
        # cooldown's own tests set it.
        "AUTHSVC_EMAIL_COOLDOWN": "0",
        **FAST_ARGON2,
    }


def unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (AUTHSVC_TEST_REQUIRE_SERVICES=1: CI must not skip)")
    pytest.skip(f"{reason}; set AUTHSVC_TEST_DATABASE_URL / AUTHSVC_TEST_REDIS_URL to run it")


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def migrate(app: Flask) -> None:
    bind_migrations(app)
    with app.app_context():
        upgrade()
        db.engine.dispose()
