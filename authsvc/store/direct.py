"""``DirectStatement``: a fixed Core statement run straight on a pooled DBAPI cursor.

For the statements every authenticated request and every refresh runs (the token check's
SELECT, the rotation's UPDATE ... RETURNING); bench/README.md has what it saves per request.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Executable, ReturnsRows

from ..compat.sqlalchemy import invalidate_pool
from ..extensions import db
from .database import sqlite_writer


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
    (tests/unit/test_store.py compares the two). Skipped is the per-execution machinery around
    the cursor (Connection, execution context, Result), most of such a statement's CPU time.

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
        with sqlite_writer(writes and sqlite):
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
            # As Connection.execute does on a disconnect: this connection goes, and every one
            # opened before now is replaced at its next checkout (a server that went away
            # silently took them all).
            invalidate_pool(engine, raw, error)
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
