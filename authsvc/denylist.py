"""The access-token denylist, by `jti` (never by the raw token: ECDSA signatures are malleable).

With REDIS_URL the entries live in Redis and expire with the token; otherwise in the
``revoked_tokens`` table, pruned by ``flask prune``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select

from .extensions import db
from .models import RevokedToken, utcnow

if TYPE_CHECKING:
    from redis import Redis

REDIS_PREFIX = "authsvc:denylist:"


class Denylist(Protocol):
    def add(self, jti: str, expires_at: datetime) -> None: ...

    def contains(self, jti: str) -> bool: ...


class DatabaseDenylist:
    """Rows in ``revoked_tokens``; ``add`` joins the caller's transaction (the caller commits)."""

    def add(self, jti: str, expires_at: datetime) -> None:
        # The dialect's own INSERT (for ON CONFLICT), imported for the dialect in use. (A SQLite
        # worker loads the PostgreSQL dialect all the same, ~2 MB: SQLAlchemy imports it to
        # check the partial indexes' postgresql_where in models.py.)
        if db.session.get_bind().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        db.session.execute(
            insert(RevokedToken)
            .values(jti=jti, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=["jti"])
        )

    def contains(self, jti: str) -> bool:
        found = db.session.scalar(select(RevokedToken.expires_at).where(RevokedToken.jti == jti))
        return found is not None


class RedisDenylist:
    """Keys with a TTL equal to the token's remaining lifetime; they vanish when it expires."""

    def __init__(self, client: Redis) -> None:
        self._client = client

    def add(self, jti: str, expires_at: datetime) -> None:
        seconds = int((expires_at - utcnow()).total_seconds()) + 1
        if seconds > 0:
            self._client.set(REDIS_PREFIX + jti, b"1", ex=seconds)

    def contains(self, jti: str) -> bool:
        return bool(self._client.exists(REDIS_PREFIX + jti))
