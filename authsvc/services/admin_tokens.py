"""Operators' admin tokens (``flask admin token``, DESIGN §11), until service clients with
the admin scope exist (§12): short-lived, scoped, not revocable, each one audited."""

from __future__ import annotations

from datetime import datetime

from ..audit import security_event
from ..store.database import write_transaction
from ..tokens.issue import issue_admin_token


def issue(name: str, ttl: int) -> tuple[str, str, datetime]:
    """A token for ``operator:<name>`` valid ``ttl`` seconds; the token, its jti, its expiry."""
    token, jti, expires_at = issue_admin_token(name, ttl)
    with write_transaction():
        security_event(
            "admin_token_issued",
            actor_id=f"operator:{name}",
            jti=jti,
            expires_at=expires_at.isoformat(),
        )
    return token, jti, expires_at
