"""SQLAlchemy's pool-wide invalidation, for ``store.direct.DirectStatement``'s disconnects.

On a disconnect ``Connection.execute`` calls ``Pool._invalidate(connection, error)``: that
connection goes, and every pooled connection opened before now is replaced at its next checkout
(the pool records the moment), so a server that went away silently costs one error, not one per
pooled connection. There is no public equivalent: ``engine.dispose()`` replaces the whole pool,
and under a restart every thread that hits the error would replace it again, while the old
pool's checked-out connections no longer count against ``pool_size``. pyproject.toml pins
SQLAlchemy to the tested minor; tests/unit/test_store.py fails if this stops working (its
silently dropped server would cost one error per pooled connection).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine


def invalidate_pool(engine: Engine, connection: Any, error: BaseException) -> None:
    """``connection`` (a checked-out pool entry) is dead, and so may be its idle siblings."""
    engine.pool._invalidate(connection, error)  # type: ignore[arg-type]
