"""Engine set-up and the write-transaction helper services use.

SQLite needs care with concurrent writers: a deferred transaction that reads and then writes
fails at once ("database is locked") if another connection wrote in between, with no wait.
Write transactions therefore start with ``BEGIN IMMEDIATE`` (take the write lock first, waiting
up to the busy timeout), and read-only work stays on plain ``BEGIN`` so readers never queue.
On PostgreSQL the helper is an ordinary transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event

from .extensions import db

SQLITE_BUSY_TIMEOUT_MS = 15_000
_BEGIN_OPTION = "authsvc_sqlite_begin"


def engine_options(database_url: str, pool_size: int) -> dict[str, Any]:
    options: dict[str, Any] = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": 10}
    if database_url.startswith("postgresql"):
        options["pool_recycle"] = 1800
        # A pooled connection may have died with a server restart: test it on checkout (one
        # round trip) so the first request after a restart succeeds instead of answering 503.
        options["pool_pre_ping"] = True
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
        connection.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write_transaction() -> Iterator[None]:
    """One short write transaction: commit on success, roll back on any error.

    Ends any read transaction the request opened first (authentication reads the session row),
    so the write starts from a fresh snapshot and takes SQLite's write lock up front.
    """
    session = db.session()  # the request's Session, not the scoped proxy
    if session.in_transaction():
        session.commit()
    session.connection(execution_options={_BEGIN_OPTION: "IMMEDIATE"})
    try:
        yield
        session.commit()
    except BaseException:
        session.rollback()
        raise
