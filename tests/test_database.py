"""authsvc.database.DirectStatement: the same rows as Connection.execute, and a pool left sound."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import bindparam, create_engine, literal_column, select, table, text
from sqlalchemy.exc import DBAPIError

from authsvc.database import DirectStatement, single_statement
from authsvc.extensions import db
from authsvc.models import Session, User
from tests.helpers import claims_of, signup

_SESSION_AND_USER = select(
    Session.id,
    Session.generation,
    Session.expires_at,
    Session.revoked_at,
    User.username,
    User.roles,
    User.created_at,
    User.disabled_at,
).join_from(Session, User, Session.user_id == User.id)
_BY_ID = _SESSION_AND_USER.where(Session.id == bindparam("sid", type_=Session.id.type))


def _session_id(client) -> uuid.UUID:
    return uuid.UUID(claims_of(signup(client)["access_token"])["sid"])


def test_rows_are_the_ones_connection_execute_returns(app, client):
    sid = _session_id(client)
    statement = DirectStatement(_BY_ID)
    with app.app_context():
        with single_statement() as connection:
            expected = connection.execute(_BY_ID, {"sid": sid}).first()
        row = statement.first({"sid": sid})
        # Same values and the same Python types (UUIDs, aware datetimes, JSON lists, None).
        assert tuple(row) == tuple(expected)
        assert [type(value) for value in row] == [type(value) for value in expected]
        assert row.username == expected.username and row.expires_at.tzinfo is not None
        assert statement.first({"sid": uuid.uuid4()}) is None


def test_a_returning_write_is_committed_and_the_connection_goes_back_transactional(make_app):
    app = make_app(AUTHSVC_DB_POOL_SIZE="1")  # so every step below uses the same connection
    sid = _session_id(app.test_client())
    bump = DirectStatement(
        Session.__table__.update()
        .where(Session.id == bindparam("sid", type_=Session.id.type))
        .values(generation=Session.generation + 1)
        .returning(Session.generation)
    )
    with app.app_context():
        assert bump.first({"sid": sid}, writes=True).generation == 1
        # Committed: a connection from another engine sees it.
        assert _generation_seen_elsewhere(app, sid) == 1
        # The pooled connection is transactional again (not left in autocommit): a rolled-back
        # ORM write is gone.
        db.session.execute(
            Session.__table__.update().where(Session.id == sid).values(generation=99)
        )
        db.session.rollback()
        assert bump.first({"sid": sid}, writes=True).generation == 2


def _generation_seen_elsewhere(app, sid: uuid.UUID) -> int:
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with engine.connect() as other:
            return other.execute(select(Session.generation).where(Session.id == sid)).scalar_one()
    finally:
        engine.dispose()


def test_driver_errors_are_sqlalchemy_errors_without_the_parameters(app):
    secret = "a-token-id-that-must-not-appear"
    statement = DirectStatement(
        select(literal_column("1").label("one"))
        .select_from(table("no_such_table"))
        .where(literal_column("x") == bindparam("jti"))
    )
    with app.app_context(), pytest.raises(DBAPIError) as raised:
        statement.first({"jti": secret})
    assert secret not in str(raised.value)
    assert not raised.value.connection_invalidated
    with app.app_context():  # the pool still serves
        assert db.session.execute(text("SELECT 1")).scalar_one() == 1


def test_only_statements_that_return_rows():
    with pytest.raises(TypeError):
        DirectStatement(Session.__table__.delete())
