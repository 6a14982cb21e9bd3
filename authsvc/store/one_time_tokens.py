"""Every statement on ``one_time_tokens`` (DESIGN §9). Tokens are looked up by their digest;
the token itself is never stored. All run in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import delete, false, insert, or_, select, update

from ..extensions import db
from ..models import OneTimeToken

_RETURNED = (
    OneTimeToken.id,
    OneTimeToken.user_id,
    OneTimeToken.purpose,
    OneTimeToken.email,
    OneTimeToken.expires_at,
)


def add(
    user_id: uuid.UUID,
    purpose: str,
    token_hash: str,
    email: str | None,
    now: datetime,
    expires_at: datetime,
) -> None:
    db.session.execute(
        insert(OneTimeToken).values(
            id=uuid.uuid4(),
            user_id=user_id,
            purpose=purpose,
            token_hash=token_hash,
            email=email,
            created_at=now,
            expires_at=expires_at,
        )
    )


def add_nothing() -> None:
    """The INSERT of ``add`` selecting no row: its round trip without a row, for the path of an
    address nobody holds (it must take as long as a known one's, DESIGN §9)."""
    db.session.execute(
        insert(OneTimeToken).from_select(
            ["id", "user_id", "purpose", "token_hash", "created_at", "expires_at"],
            select(
                OneTimeToken.id,
                OneTimeToken.user_id,
                OneTimeToken.purpose,
                OneTimeToken.token_hash,
                OneTimeToken.created_at,
                OneTimeToken.expires_at,
            ).where(false()),
        )
    )


def void(user_id: uuid.UUID, purposes: Collection[str], reason: str, now: datetime) -> int:
    """Spend every live token of ``purposes`` the user holds (a newer one replaces them, or
    what they would change has changed); how many."""
    result = db.session.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.user_id == user_id,
            OneTimeToken.purpose.in_(list(purposes)),
            OneTimeToken.spent_at.is_(None),
        )
        .values(spent_at=now, spent_reason=reason)
    )
    return result.rowcount


def live(token_hash: str, purposes: Collection[str], now: datetime) -> Any:
    """The unspent, unexpired token with this digest and one of ``purposes``, or None. A look
    only: what decides a use is ``consume``."""
    return db.session.execute(
        select(*_RETURNED).where(
            OneTimeToken.token_hash == token_hash,
            OneTimeToken.purpose.in_(list(purposes)),
            OneTimeToken.spent_at.is_(None),
            OneTimeToken.expires_at > now,
        )
    ).first()


def consume(token_hash: str, purposes: Collection[str], now: datetime) -> Any:
    """Spend the token in one conditional UPDATE: of any number of parallel uses exactly one
    gets its row back; the others (and an unknown, spent, expired or other-purpose token) get
    None."""
    return db.session.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.token_hash == token_hash,
            OneTimeToken.purpose.in_(list(purposes)),
            OneTimeToken.spent_at.is_(None),
            OneTimeToken.expires_at > now,
        )
        .values(spent_at=now, spent_reason="used")
        .returning(*_RETURNED)
    ).first()


def delete_dead(now: datetime, spent_before: datetime) -> int:
    """Expired tokens, and tokens spent before ``spent_before`` (kept a while for support)."""
    result = db.session.execute(
        delete(OneTimeToken).where(
            or_(OneTimeToken.expires_at <= now, OneTimeToken.spent_at < spent_before)
        )
    )
    return result.rowcount


def addresses_of(user_id: uuid.UUID) -> list[str]:
    """The addresses the user's tokens were mailed to or would prove (a pending change's new
    address), whatever their state."""
    return [
        email
        for email in db.session.scalars(
            select(OneTimeToken.email).where(OneTimeToken.user_id == user_id).distinct()
        )
        if email
    ]
