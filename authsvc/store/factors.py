"""Every statement on ``factors`` and ``recovery_codes`` (DESIGN §10). All run in the
caller's transaction.

What makes a code single use is here: a TOTP step is taken by an UPDATE that only moves
``last_step`` forward, a recovery code by an UPDATE that only sets ``used_at`` once; of any
number of parallel uses exactly one gets its row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update

from ..extensions import db
from ..models import Factor, RecoveryCode

TOTP, PASSKEY = "totp", "passkey"
_LISTED = (Factor.id, Factor.type, Factor.created_at, Factor.last_used_at)


def add_totp(
    factor_id: uuid.UUID, user_id: uuid.UUID, secret_encrypted: bytes, now: datetime
) -> None:
    """A pending TOTP factor: it counts for nothing until ``confirm``."""
    db.session.execute(
        insert(Factor).values(
            id=factor_id,
            user_id=user_id,
            type=TOTP,
            secret_encrypted=secret_encrypted,
            created_at=now,
        )
    )


def delete_pending(user_id: uuid.UUID) -> int:
    """Enrolments the user started and never confirmed (a new one replaces them)."""
    result = db.session.execute(
        delete(Factor).where(Factor.user_id == user_id, Factor.confirmed_at.is_(None))
    )
    return result.rowcount


def confirmed(user_id: uuid.UUID) -> list[Any]:
    """The user's active factors (id, type, created_at, last_used_at), oldest first."""
    return list(
        db.session.execute(
            select(*_LISTED)
            .where(Factor.user_id == user_id, Factor.confirmed_at.is_not(None))
            .order_by(Factor.created_at, Factor.id)
        )
    )


def confirmed_types(user_id: uuid.UUID) -> list[str]:
    return [row.type for row in confirmed(user_id)]


def totp_row(user_id: uuid.UUID, *, factor_id: uuid.UUID | None = None) -> Any:
    """The user's TOTP factor (id, secret_encrypted, last_step, confirmed_at): the one named
    by ``factor_id`` (pending or not), else the active one; None if there is none."""
    query = select(
        Factor.id, Factor.secret_encrypted, Factor.last_step, Factor.confirmed_at, Factor.created_at
    ).where(Factor.user_id == user_id, Factor.type == TOTP)
    if factor_id is not None:
        query = query.where(Factor.id == factor_id)
    else:
        query = query.where(Factor.confirmed_at.is_not(None))
    return db.session.execute(query).first()


def confirm(factor_id: uuid.UUID, step: int, now: datetime, enrolled_after: datetime) -> bool:
    """Activate a pending TOTP factor started after ``enrolled_after`` with the code of
    ``step`` (which no later code may reuse); whether it was this call that did."""
    result = db.session.execute(
        update(Factor)
        .where(
            Factor.id == factor_id,
            Factor.confirmed_at.is_(None),
            Factor.created_at > enrolled_after,
        )
        .values(confirmed_at=now, last_step=step, last_used_at=now)
    )
    return result.rowcount == 1


def take_step(factor_id: uuid.UUID, step: int, now: datetime) -> bool:
    """Accept the code of ``step`` for an active factor if no code of this step or a later one
    was accepted before: one conditional UPDATE, so of two parallel uses of one code exactly
    one succeeds, and a code once accepted is refused forever."""
    result = db.session.execute(
        update(Factor)
        .where(
            Factor.id == factor_id,
            Factor.confirmed_at.is_not(None),
            or_(Factor.last_step.is_(None), Factor.last_step < step),
        )
        .values(last_step=step, last_used_at=now)
    )
    return result.rowcount == 1


def delete_factor(user_id: uuid.UUID, factor_id: uuid.UUID) -> int:
    result = db.session.execute(
        delete(Factor).where(Factor.user_id == user_id, Factor.id == factor_id)
    )
    return result.rowcount


def delete_all(user_id: uuid.UUID) -> int:
    result = db.session.execute(delete(Factor).where(Factor.user_id == user_id))
    return result.rowcount


def count_confirmed(user_id: uuid.UUID) -> int:
    return db.session.scalar(
        select(func.count())
        .select_from(Factor)
        .where(Factor.user_id == user_id, Factor.confirmed_at.is_not(None))
    )


def replace_recovery_codes(user_id: uuid.UUID, digests: Sequence[str], now: datetime) -> None:
    """The user's recovery codes become exactly these (the old set, used or not, is gone)."""
    delete_recovery_codes(user_id)
    db.session.execute(
        insert(RecoveryCode),
        [
            {"id": uuid.uuid4(), "user_id": user_id, "code_hash": digest, "created_at": now}
            for digest in digests
        ],
    )


def delete_recovery_codes(user_id: uuid.UUID) -> None:
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))


def use_recovery_code(user_id: uuid.UUID, digest: str, now: datetime) -> bool:
    """Spend one unused code of the user's in one conditional UPDATE; whether this call did."""
    result = db.session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user_id,
            RecoveryCode.code_hash == digest,
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return result.rowcount == 1


def recovery_codes_left(user_id: uuid.UUID) -> int:
    return db.session.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    )


def delete_abandoned(created_before: datetime) -> int:
    """Enrolments never confirmed, started before ``created_before`` (for prune)."""
    result = db.session.execute(
        delete(Factor).where(Factor.confirmed_at.is_(None), Factor.created_at < created_before)
    )
    return result.rowcount
