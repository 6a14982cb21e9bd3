"""Every statement on ``challenges`` (DESIGN §10): the ``mfa_token`` of a login waiting for
its second step, and WebAuthn ceremonies' challenges, each looked up by its digest. All run in
the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, insert, or_, update

from ..extensions import db
from ..models import Challenge

_RETURNED = (Challenge.id, Challenge.kind, Challenge.user_id, Challenge.password_version)


def _live(digest: str, kinds: Collection[str], now: datetime) -> list[ColumnElement[bool]]:
    """The challenge with this digest, of one of ``kinds``, neither spent nor expired."""
    return [
        Challenge.digest == digest,
        Challenge.kind.in_(list(kinds)),
        Challenge.spent_at.is_(None),
        Challenge.expires_at > now,
    ]


def add(
    kind: str,
    digest: str,
    now: datetime,
    expires_at: datetime,
    *,
    user_id: uuid.UUID | None = None,
    password_version: int | None = None,
) -> uuid.UUID:
    challenge_id = uuid.uuid4()
    db.session.execute(
        insert(Challenge).values(
            id=challenge_id,
            kind=kind,
            user_id=user_id,
            digest=digest,
            password_version=password_version,
            attempts=0,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return challenge_id


def take_attempt(digest: str, kinds: Collection[str], now: datetime, max_attempts: int) -> Any:
    """Count one more code tried with a live challenge, in one conditional UPDATE, before the
    code is checked: of any number of parallel tries at most ``max_attempts`` ever get the
    row back (id, kind, user_id, password_version); the rest, and an unknown, spent or expired
    challenge, get None."""
    return db.session.execute(
        update(Challenge)
        .where(*_live(digest, kinds, now), Challenge.attempts < max_attempts)
        .values(attempts=Challenge.attempts + 1)
        .returning(*_RETURNED)
    ).first()


def spend(challenge_id: uuid.UUID, now: datetime) -> bool:
    """Mark a challenge used; whether this call did (a parallel use may have first)."""
    result = db.session.execute(
        update(Challenge)
        .where(Challenge.id == challenge_id, Challenge.spent_at.is_(None))
        .values(spent_at=now)
    )
    return result.rowcount == 1


def consume(digest: str, kinds: Collection[str], now: datetime) -> Any:
    """Spend a live challenge in one conditional UPDATE: its row for exactly one caller."""
    return db.session.execute(
        update(Challenge)
        .where(*_live(digest, kinds, now))
        .values(spent_at=now)
        .returning(*_RETURNED)
    ).first()


def void_for_user(user_id: uuid.UUID, now: datetime) -> int:
    """Spend every live challenge of the user (a factor changed, the password changed)."""
    result = db.session.execute(
        update(Challenge)
        .where(Challenge.user_id == user_id, Challenge.spent_at.is_(None))
        .values(spent_at=now)
    )
    return result.rowcount


def delete_dead(now: datetime) -> int:
    """Expired or spent challenges (nothing can use them any more)."""
    result = db.session.execute(
        delete(Challenge).where(or_(Challenge.expires_at <= now, Challenge.spent_at.is_not(None)))
    )
    return result.rowcount
