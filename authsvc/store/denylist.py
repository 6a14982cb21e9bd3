"""The access-token denylist, by `jti` (never by the raw token: ECDSA signatures are malleable).

With REDIS_URL the entries live in Redis and expire with the token; otherwise in the
``revoked_tokens`` table, pruned by ``flask prune``. Both have one interface: a service adds an
entry in the transaction that revokes the session (the table's row commits with it; Redis is
written at once, and an entry for a revocation that then fails to commit only refuses a token
its owner asked to end), and the token check asks ``checked_with_session`` whether the entry
comes back as a column of its one session statement or needs ``contains``. Redis being
unreachable raises ``DenylistUnavailable``, which callers may survive: every denylisted ``jti``
belongs to a session already revoked in the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import delete, select

from ..extensions import db
from ..models import RevokedToken, utcnow

if TYPE_CHECKING:
    from redis import Redis

REDIS_PREFIX = "authsvc:denylist:"


class DenylistUnavailable(Exception):
    """The denylist's store (Redis) cannot be reached."""


class Denylist(Protocol):
    # True: the session statement reads the entry too (store.sessions.PRINCIPAL_AND_DENIED).
    checked_with_session: bool

    def add(self, jti: str, expires_at: datetime) -> None: ...

    def contains(self, jti: str) -> bool: ...


class DatabaseDenylist:
    """Rows in ``revoked_tokens``; ``add`` joins the caller's transaction."""

    checked_with_session = True

    def add(self, jti: str, expires_at: datetime) -> None:
        # The dialect's own INSERT (for ON CONFLICT), imported for the dialect in use.
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

    checked_with_session = False

    def __init__(self, client: Redis) -> None:
        from redis.exceptions import RedisError  # redis is imported only when configured

        self._client = client
        self._errors = RedisError

    def add(self, jti: str, expires_at: datetime) -> None:
        seconds = int((expires_at - utcnow()).total_seconds()) + 1
        if seconds > 0:
            try:
                self._client.set(REDIS_PREFIX + jti, b"1", ex=seconds)
            except self._errors as error:
                raise DenylistUnavailable() from error

    def contains(self, jti: str) -> bool:
        try:
            return bool(self._client.exists(REDIS_PREFIX + jti))
        except self._errors as error:
            raise DenylistUnavailable() from error


def delete_expired_rows() -> int:
    """Delete ``revoked_tokens`` rows whose token has expired (the caller's transaction)."""
    return db.session.execute(
        delete(RevokedToken).where(RevokedToken.expires_at <= utcnow())
    ).rowcount
