"""Engine set-up and the write-transaction helper services use.

SQLite needs care with concurrent writers: a deferred transaction that reads and then writes
fails at once ("database is locked") if another connection wrote in between, with no wait.
Write transactions therefore start with ``BEGIN IMMEDIATE`` (take the write lock first, waiting
up to the busy timeout), and read-only work stays on plain ``BEGIN`` so readers never queue.
On PostgreSQL the helper is an ordinary transaction.

The per-request token check (one SELECT) and a refresh's rotation (one conditional UPDATE) run
outside any explicit transaction, as ``DirectStatement``s: one round trip instead of four (ping,
BEGIN, statement, COMMIT or ROLLBACK), on SQLite no BEGIN either, and none of the per-execution
machinery of ``Connection.execute`` (see the class). ``single_statement()`` is the same autocommit
connection for the rarer single statements.
"""

from __future__ import annotations

import select
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.sql.expression import Executable, ReturnsRows

from .extensions import db

SQLITE_BUSY_TIMEOUT_MS = 15_000
_BEGIN_OPTION = "authsvc_sqlite_begin"
# A pooled PostgreSQL connection is tested with a round trip before use only when it may be dead:
# the server has sent it something while it sat idle (a restarting or failing-over server sends
# "terminating connection" and closes it), or it sat idle this long (a silently dropped
# connection sends nothing). SQLAlchemy's pool_pre_ping would add a round trip to every request.
PING_AFTER_IDLE_SECONDS = 10.0
_CHECKED_IN_AT = "authsvc_checked_in_at"


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
        if idle < PING_AFTER_IDLE_SECONDS and not _has_pending_input(dbapi_connection):
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError(str(error)) from error
        if not alive:
            raise DisconnectionError("the connection failed its ping")


def _has_pending_input(dbapi_connection: Any) -> bool:
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
    with _sqlite_writer(writes), engine.connect() as connection:
        connection.execution_options(**{_BEGIN_OPTION: None})
        yield connection


# SQLite has one writer at a time, and a connection that finds the write lock taken waits in
# SQLite's busy handler, which sleeps (1, 2, 5, 10 ... ms) instead of waking when the lock is
# released: under load most of a write's time went to those sleeps. Threads of one process
# therefore queue for the write lock here first, where the next one wakes the moment it is
# free; the busy timeout still arbitrates between processes.
SQLITE_WRITER = threading.RLock()


@contextmanager
def _sqlite_writer(writes: bool) -> Iterator[None]:
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
    with _sqlite_writer(session.get_bind().dialect.name == "sqlite"):
        session.connection(execution_options={_BEGIN_OPTION: "IMMEDIATE"})
        try:
            yield
            session.commit()
        except BaseException:
            session.rollback()
            raise


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # One entry a parameter, in the driver's order: the name the SQL uses, the caller's key for
    # it (None for a value fixed in the statement), that fixed value, the type's processor.
    parameters: tuple[tuple[str, str | None, Any, Callable[[Any], Any] | None], ...]
    positional: bool
    result_processors: tuple[Callable[[Any], Any] | None, ...]


class DirectStatement:
    """A fixed Core statement run straight on a pooled DBAPI cursor, in autocommit mode.

    For the statements every authenticated request and every refresh runs (the token check's
    SELECT, the rotation's UPDATE ... RETURNING). SQLAlchemy still does the database work here:
    it compiles the statement once per dialect, and its types' own processors convert each
    parameter and each column, so values go in and come out as through ``Connection.execute``
    (tests/test_database.py compares the two). Skipped is the per-execution machinery around the
    cursor (Connection, execution context, Result): measured on SQLite, 190 µs of CPU per
    statement against 25 µs for the statement itself; on PostgreSQL 120 µs of 350.

    Driver errors come out as SQLAlchemy's (``DBAPIError.instance``, so the 503 handler sees an
    ``OperationalError``), and a disconnect invalidates the pool's connections, as
    ``Connection.execute`` does. Rows are named tuples with the statement's column keys.
    Statements that need ``Connection.execute`` to fill in values (Python-side defaults or
    ``onupdate``, expanding IN) are refused.
    """

    def __init__(self, statement: Executable) -> None:
        columns = getattr(statement, "exported_columns", None)
        if not isinstance(statement, ReturnsRows) or not columns:
            raise TypeError("a SELECT, or a DML statement with RETURNING")
        self.statement = statement
        self._columns = list(columns)
        self._row = namedtuple(  # type: ignore[misc]
            "Row", [column.key for column in self._columns], rename=True
        )
        self._by_dialect: dict[tuple[str, str], _Compiled] = {}

    def _compiled(self, dialect: Dialect) -> _Compiled:
        compiled = self._by_dialect.get((dialect.name, dialect.driver))
        if compiled is None:
            sql = self.statement.compile(dialect=dialect)
            # What only Connection.execute knows how to fill in (Python-side defaults and
            # onupdate values, IN lists rendered per call) would silently be sent as NULL here.
            if (
                sql.insert_prefetch
                or sql.update_prefetch
                or sql.post_compile_params
                or sql.literal_execute_params
            ):
                raise TypeError("a statement with Python-side defaults or post-compile parameters")
            by_name = {}
            for bind, name in sql.bind_names.items():
                by_name[name] = (
                    sql.escaped_bind_names.get(name, name),
                    bind.key if bind.required else None,
                    None if bind.required else bind.effective_value,
                    bind.type.dialect_impl(dialect).bind_processor(dialect),
                )
            order = sql.positiontup if sql.positional else list(by_name)
            compiled = self._by_dialect[(dialect.name, dialect.driver)] = _Compiled(
                sql=str(sql),
                parameters=tuple(by_name[name] for name in order or ()),
                positional=bool(sql.positional),
                result_processors=tuple(
                    column.type.dialect_impl(dialect).result_processor(dialect, None)
                    for column in self._columns
                ),
            )
        return compiled

    @staticmethod
    def _arguments(compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        values = []
        for _name, key, fixed, process in compiled.parameters:
            value = fixed if key is None else params[key]
            values.append(value if process is None else process(value))
        if compiled.positional:
            return values
        return dict(zip([name for name, *_ in compiled.parameters], values, strict=True))

    def first(self, params: Mapping[str, Any], *, writes: bool = False) -> Any:
        """The first row (a named tuple), or None. ``writes``: as for ``single_statement``."""
        engine = db.engine
        dialect = engine.dialect
        sqlite = dialect.name == "sqlite"
        with _sqlite_writer(writes and sqlite):
            try:
                raw = engine.raw_connection()
            except dialect.loaded_dbapi.Error as error:  # cannot connect
                disconnect = dialect.is_disconnect(error, None, None)
                raise _sqlalchemy_error(error, dialect, None, disconnect) from error
            try:
                # Compiled once connected: the dialect knows the server's version (RETURNING).
                compiled = self._compiled(dialect)
                arguments = self._arguments(compiled, params)
                rows = _run(engine, raw, compiled.sql, arguments, autocommit=not sqlite)
            finally:
                raw.close()
        if not rows:
            return None
        return self._row(
            *(
                value if process is None else process(value)
                for process, value in zip(compiled.result_processors, rows[0], strict=True)
            )
        )


def _run(engine: Engine, raw: Any, sql: str, arguments: Any, *, autocommit: bool) -> list[Any]:
    """Execute on a checked-out pooled connection and fetch everything; ``autocommit``: switch
    the driver's autocommit on for the statement (psycopg) and back off before the connection
    returns to the pool (the ORM expects transactions)."""
    dialect = engine.dialect
    driver = raw.driver_connection
    invalidated = False
    try:
        if autocommit:
            driver.autocommit = True
        cursor = raw.cursor()
        try:
            cursor.execute(sql, arguments)
            # fetchall: a RETURNING statement has finished (and committed) only then.
            return cursor.fetchall()  # type: ignore[no-any-return]
        finally:
            cursor.close()
    except dialect.loaded_dbapi.Error as error:
        invalidated = dialect.is_disconnect(error, raw.dbapi_connection, None)
        if invalidated:
            # As Connection.execute does on a disconnect: this connection, and every other one
            # opened before now is replaced when next checked out (a server that went away
            # silently took them all).
            engine.pool._invalidate(raw, error)
        raise _sqlalchemy_error(error, dialect, sql, invalidated) from error
    finally:
        if autocommit and not invalidated:
            try:
                driver.autocommit = False
            except Exception:  # a broken connection must not go back to the pool
                raw.invalidate()


def _sqlalchemy_error(
    error: Exception, dialect: Dialect, sql: str | None, disconnect: bool
) -> BaseException:
    """The SQLAlchemy exception ``Connection.execute`` would raise for a driver error
    (``OperationalError`` for a server that is down, so the 503 handler answers)."""
    return DBAPIError.instance(
        sql,
        None,  # parameters are never shown: they hold token ids
        error,
        dialect.loaded_dbapi.Error,
        connection_invalidated=disconnect,
        dialect=dialect,
    )
