"""authsvc.store.direct.DirectStatement: the same rows as Connection.execute, a pool left sound."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Table,
    bindparam,
    create_engine,
    literal_column,
    select,
    table,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError

from authsvc.extensions import db
from authsvc.models import Session, utcnow
from authsvc.store import database as store_database
from authsvc.store import sessions as session_store
from authsvc.store.database import single_statement
from authsvc.store.direct import DirectStatement
from tests.support.helpers import claims_of, login, signup


def _session_id(token: str) -> uuid.UUID:
    return uuid.UUID(claims_of(token)["sid"])


def _same_row(row, expected) -> None:
    # Same values and the same Python types (UUIDs, aware datetimes, JSON lists, booleans, None).
    assert row._fields == tuple(expected._fields)
    assert tuple(row) == tuple(expected)
    assert [type(value) for value in row] == [type(value) for value in expected]


def test_the_token_check_reads_what_connection_execute_reads(app, client):
    access = signup(client)["access_token"]
    parameters = {"sid": _session_id(access)}
    with app.app_context():
        statement = session_store.PRINCIPAL
        with single_statement() as connection:
            expected = connection.execute(statement.statement, parameters).first()
        row = statement.first(parameters)
        _same_row(row, expected)
        assert row.username == "alice" and row.expires_at.tzinfo is not None
        assert statement.first({"sid": uuid.uuid4()}) is None


def test_the_rotation_returns_what_connection_execute_returns(app, client):
    # Two sessions of one user, rotated once each: one through DirectStatement, one through
    # Connection.execute.
    first = signup(client)["refresh_token"]
    second = login(client)["refresh_token"]
    now = utcnow()

    def parameters(token: str) -> dict:
        claims = claims_of(token)
        return {
            "session_id": _session_id(token),
            "owner_id": uuid.UUID(claims["sub"]),
            "generation": 0,
            "next_generation": 1,
            "now": now,
            "user_agent": "pytest",
            "ip": "127.0.0.1",
        }

    with app.app_context():
        row = session_store.ROTATE.first(parameters(first), writes=True)
        with single_statement(writes=True) as connection:
            expected = connection.execute(
                session_store.ROTATE.statement, parameters(second)
            ).first()
        assert row.id == _session_id(first) and expected.id == _session_id(second)
        assert row.generation == expected.generation == 1
        same_user = ("user_id", "username", "roles", "user_created_at")
        assert [getattr(row, f) for f in same_user] == [getattr(expected, f) for f in same_user]
        assert row._fields == tuple(expected._fields)
        assert [type(value) for value in row] == [type(value) for value in expected]
        # The same generation again matches nothing: the first UPDATE is committed.
        assert session_store.ROTATE.first(parameters(first), writes=True) is None


def _generation_seen_elsewhere(app, sid: uuid.UUID) -> int:
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with engine.connect() as other:
            return other.execute(select(Session.generation).where(Session.id == sid)).scalar_one()
    finally:
        engine.dispose()


_BUMP = DirectStatement(
    update(Session)
    .where(Session.id == bindparam("sid", type_=Session.id.type))
    .values(generation=Session.generation + 1)
    .returning(Session.generation)
)


def _assert_transactional(sid: uuid.UUID) -> None:
    """The pooled connection is transactional (not left in autocommit): a rolled-back ORM write
    is gone."""
    before = _BUMP.first({"sid": sid}, writes=True).generation
    db.session.execute(update(Session).where(Session.id == sid).values(generation=99))
    db.session.rollback()
    assert _BUMP.first({"sid": sid}, writes=True).generation == before + 1


def test_a_returning_write_is_committed_and_the_connection_goes_back_transactional(make_app):
    app = make_app(AUTHSVC_DB_POOL_SIZE="1")  # so every step below uses the same connection
    sid = _session_id(signup(app.test_client())["access_token"])
    with app.app_context():
        assert _BUMP.first({"sid": sid}, writes=True).generation == 1
        # Committed: a connection from another engine sees it.
        assert _generation_seen_elsewhere(app, sid) == 1
        _assert_transactional(sid)
        assert db.engine.pool.checkedout() == 0


def test_driver_errors_are_sqlalchemy_errors_and_leave_the_connection_sound(make_app):
    app = make_app(AUTHSVC_DB_POOL_SIZE="1")
    sid = _session_id(signup(app.test_client())["access_token"])
    secret = "a-token-id-that-must-not-appear"
    statement = DirectStatement(
        select(literal_column("1").label("one"))
        .select_from(table("no_such_table"))
        .where(literal_column("x") == bindparam("jti"))
    )
    with app.app_context():
        with pytest.raises(DBAPIError) as raised:
            statement.first({"jti": secret})
        assert secret not in str(raised.value)
        assert not raised.value.connection_invalidated
        # Back in the pool, not leaked, and transactional again.
        assert db.engine.pool.checkedout() == 0
        _assert_transactional(sid)


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.services)])
def test_a_silently_dropped_server_costs_one_error_not_one_per_pooled_connection(
    make_app, monkeypatch
):
    """Every backend killed, and the checkout check blind to it (as when a failover drops
    connections without a word): the first statement fails, and the pool's other connections
    are replaced rather than each failing in turn, as with Connection.execute."""
    app = make_app(AUTHSVC_DB_POOL_SIZE="3")
    sid = _session_id(signup(app.test_client())["access_token"])
    parameters = {"sid": sid, "jti": "x"}
    with app.app_context():
        held = [db.engine.raw_connection() for _ in range(3)]  # three connections in the pool
        for connection in held:
            connection.close()
        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        monkeypatch.setattr(store_database, "has_pending_input", lambda _connection: False)
        with pytest.raises(DBAPIError) as raised:
            session_store.PRINCIPAL.first(parameters)
        assert raised.value.connection_invalidated
        for _ in range(3):
            assert session_store.PRINCIPAL.first(parameters).username == "alice"


def test_statements_that_need_connection_execute_are_refused(app):
    counters = Table(
        "counters", MetaData(), Column("id", Integer, primary_key=True), Column("n", Integer)
    )
    stamped = Table(
        "sessions",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("stamp", Integer, onupdate=lambda: 1),  # a Python-side onupdate
    )
    with pytest.raises(TypeError):
        DirectStatement(Session.__table__.delete())  # returns no rows
    refused = [
        DirectStatement(update(stamped).values(id=bindparam("id")).returning(stamped.c.id)),
        DirectStatement(
            select(counters.c.n).where(counters.c.id.in_(bindparam("ids", expanding=True)))
        ),
    ]
    with app.app_context():
        for statement in refused:
            with pytest.raises(TypeError):
                statement.first({"id": 1, "ids": [1, 2]})
        assert db.engine.pool.checkedout() == 0
        assert db.session.execute(text("SELECT 1")).scalar_one() == 1
