"""Migrations: upgrading an empty database gives exactly the models' schema."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from authsvc import create_app
from authsvc.cli import bind_migrations
from authsvc.extensions import db
from tests.support.servers import ROOT
from tests.support.settings import POSTGRES_URL, base_config, unavailable, with_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/empty.db"
        return
    name = f"authsvc_migration_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as error:
        unavailable(f"PostgreSQL at {POSTGRES_URL} is unreachable: {error}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(POSTGRES_URL, name)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pending_diff(app):
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def test_upgrade_matches_the_models(empty_database):
    app = create_app({**base_config(), "DATABASE_URL": empty_database})
    bind_migrations(app)
    with app.app_context():
        upgrade()
    assert pending_diff(app) == []
    with app.app_context():
        tables = set(inspect(db.engine).get_table_names())
        db.engine.dispose()
    assert {"users", "sessions", "signing_keys", "alembic_version"} <= tables
    assert "revoked_tokens" not in tables  # 0004: the session row alone decides revocation


def test_downgrade_and_upgrade_again(empty_database):
    app = create_app({**base_config(), "DATABASE_URL": empty_database})
    bind_migrations(app)
    with app.app_context():
        upgrade()
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        db.engine.dispose()
    assert pending_diff(app) == []


@pytest.mark.slow
def test_flask_db_upgrade_command_creates_the_schema(empty_database):
    """The exact command `make run` and the deployment use."""
    env = {**os.environ, **base_config(), "DATABASE_URL": empty_database}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    app = create_app({**base_config(), "DATABASE_URL": empty_database})
    assert pending_diff(app) == []
    with app.app_context():
        db.engine.dispose()


def test_no_table_is_created_outside_migrations(tmp_path):
    """Nothing but `db upgrade` creates tables: a fresh app on an empty database makes none."""
    url = f"sqlite:///{tmp_path}/untouched.db"
    app = create_app({**base_config(), "DATABASE_URL": url})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    with app.app_context():
        assert inspect(db.engine).get_table_names() == []
        db.engine.dispose()
