"""Engine set-up, and the connection and transaction helpers the stores and services use.

SQLite needs care with concurrent writers: a deferred transaction that reads and then writes
fails at once ("database is locked") if another connection wrote in between, with no wait.
Write transactions therefore start with ``BEGIN IMMEDIATE`` (take the write lock first, waiting
up to the busy timeout), and read-only work stays on plain ``BEGIN`` so readers never queue.
On PostgreSQL the helper is an ordinary transaction.

The per-request token check (one SELECT) and a refresh's rotation (one conditional UPDATE) run
outside any explicit transaction, as ``authsvc.store.direct.DirectStatement``s: one round trip
instead of four (ping, BEGIN, statement, COMMIT or ROLLBACK), on SQLite no BEGIN either.
``single_statement()`` is the same autocommit connection for the rarer single statements.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from ..extensions import db

SQLITE_BUSY_TIMEOUT_MS = 15_000
_BEGIN_OPTION = "authsvc_sqlite_begin"
# A pooled PostgreSQL connection is tested with a round trip before use only when it may be dead:
# the server has sent it something while it sat idle (a restarting or failing-over server sends
# "terminating connection" and closes it), or it sat idle this long (a silently dropped
# connection sends nothing). SQLAlchemy's pool_pre_ping would add a round trip to every request.
PING_AFTER_IDLE_SECONDS = 10.0
_CHECKED_IN_AT = "authsvc_checked_in_at"


def register_database(app: Flask, database_url: str, pool_size: int) -> None:
    """Bind Flask-SQLAlchemy to the app with the engine set up for its backend."""
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(database_url, pool_size),
    )
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            configure_sqlite(db.engine)
        else:
            configure_postgresql(db.engine)


def ping() -> None:
    """One round trip to the database (readiness); raises if it does not answer."""
    try:
        db.session.execute(text("SELECT 1"))
    finally:
        db.session.rollback()


def engine_options(database_url: str, pool_size: int) -> dict[str, Any]:
    options: dict[str, Any] = {
        "pool_size": pool_size,
        "max_overflow": 0,
        "pool_timeout": 10,
        # A statement's parameters stay out of SQLAlchemy's error text, which an unhandled
        # error's log line carries: they include password hashes and token ids.
        "hide_parameters": True,
    }
    if database_url.startswith("postgresql"):
        options["pool_recycle"] = 1800
        # Bound how long a request waits for an unreachable server before answering 503: the
        # connect itself, and (TCP keepalives, tcp_user_timeout) a connection already open when
        # the network or the server goes silent, which would otherwise hang for many minutes.
        options["connect_args"] = {
            "connect_timeout": 3,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "tcp_user_timeout": 10_000,
        }
    return options


def configure_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, foreign keys, and BEGIN IMMEDIATE for write transactions."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy (the "begin" hook below) emit BEGIN instead of the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        if mode is not None:  # None: single_statement(), autocommit
            connection.exec_driver_sql(f"BEGIN {mode}")


def configure_postgresql(engine: Engine) -> None:
    """Test a pooled connection that may have died before handing it out (see above).

    A pooled connection may have died with a server restart; testing it on checkout makes the
    first request after a restart succeed instead of answering 503. Raising DisconnectionError
    from the checkout hook makes the pool discard the connection and open a new one.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None:
            return  # just opened
        idle = time.monotonic() - checked_in_at
        if idle < PING_AFTER_IDLE_SECONDS and not has_pending_input(dbapi_connection):
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError(str(error)) from error
        if not alive:
            raise DisconnectionError("the connection failed its ping")


def has_pending_input(dbapi_connection: Any) -> bool:
    """Whether an idle connection's socket has something to read (no round trip: one poll)."""
    try:
        descriptor = dbapi_connection.fileno()
    except Exception:  # closed or broken: let the ping decide
        return True
    poller = select.poll()
    poller.register(descriptor, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


@contextmanager
def single_statement(*, writes: bool = False) -> Iterator[Connection]:
    """A pooled connection in autocommit mode, for work that is one statement.

    A single statement is atomic on its own (an UPDATE takes SQLite's write lock itself, waiting
    up to the busy timeout), so no BEGIN and no COMMIT or ROLLBACK reach the server, and on
    PostgreSQL no ping unless the connection was idle. Not for work that needs several
    statements to see one snapshot or to commit together: that is ``write_transaction()``.
    ``writes``: the statement writes (on SQLite it then queues on SQLITE_WRITER first).
    """
    engine = db.engine
    if engine.dialect.name != "sqlite":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            yield connection
        return
    with sqlite_writer(writes), engine.connect() as connection:
        connection.execution_options(**{_BEGIN_OPTION: None})
        yield connection


# SQLite has one writer at a time, and a connection that finds the write lock taken waits in
# SQLite's busy handler, which sleeps (1, 2, 5, 10 ... ms) instead of waking when the lock is
# released: under load most of a write's time went to those sleeps. Threads of one process
# therefore queue for the write lock here first, where the next one wakes the moment it is
# free; the busy timeout still arbitrates between processes.
SQLITE_WRITER = threading.RLock()


@contextmanager
def sqlite_writer(writes: bool) -> Iterator[None]:
    if not writes:
        yield
        return
    with SQLITE_WRITER:
        yield


@contextmanager
def write_transaction() -> Iterator[None]:
    """One short write transaction: commit on success, roll back on any error.

    Ends any read transaction the request opened first (authentication reads the session row),
    so the write starts from a fresh snapshot and takes SQLite's write lock up front.
    """
    session = db.session()  # the request's Session, not the scoped proxy
    if session.in_transaction():
        session.commit()
    with sqlite_writer(session.get_bind().dialect.name == "sqlite"):
        session.connection(execution_options={_BEGIN_OPTION: "IMMEDIATE"})
        session.info[WRITING_KEY] = True
        try:
            yield
            session.info.pop(WRITING_KEY, None)
            session.commit()
        except BaseException:
            session.info.pop(WRITING_KEY, None)
            session.rollback()
            # The connection is back in the pool now: what runs here may take one.
            for callback in session.info.pop(AFTER_ROLLBACK_KEY, ()):
                callback()
            raise
        finally:
            session.info.pop(AFTER_ROLLBACK_KEY, None)


# Set on the ORM session while a write_transaction() block runs: what is written now commits
# (or rolls back) with it (``authsvc.audit`` puts its rows there).
WRITING_KEY = "authsvc_writing"
# Callables to run once the block's transaction has rolled back (``after_rollback()``).
AFTER_ROLLBACK_KEY = "authsvc_after_rollback"


def after_rollback(callback: Callable[[], None]) -> None:
    """Run ``callback`` if the current write_transaction() rolls back, after the rollback."""
    db.session().info.setdefault(AFTER_ROLLBACK_KEY, []).append(callback)


def in_write_transaction() -> bool:
    return bool(db.session().info.get(WRITING_KEY))


def rollback_quietly() -> None:
    """End the request's transaction after a database error; the connection may already be
    gone (the pool discards it)."""
    with contextlib.suppress(DBAPIError, PoolTimeoutError):
        db.session.rollback()
