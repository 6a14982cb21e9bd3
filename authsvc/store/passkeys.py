"""Every statement on passkeys: ``factors`` rows of type ``passkey`` (DESIGN §10). All run in
the caller's transaction.

A passkey is active from its registration (``confirmed_at`` set at once). Its sign counter
moves by one conditional UPDATE from the value the assertion was checked against, so of two
parallel uses that were both checked against one count, exactly one gets through.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from ..extensions import db
from ..models import Factor, User

PASSKEY = "passkey"


def add(
    user_id: uuid.UUID,
    *,
    credential_id: str,
    public_key: bytes,
    sign_count: int,
    transports: Sequence[str],
    device_type: str,
    now: datetime,
) -> uuid.UUID:
    factor_id = uuid.uuid4()
    db.session.execute(
        insert(Factor).values(
            id=factor_id,
            user_id=user_id,
            type=PASSKEY,
            credential_id=credential_id,
            public_key=public_key,
            sign_count=sign_count,
            transports=list(transports),
            device_type=device_type,
            created_at=now,
            confirmed_at=now,
        )
    )
    return factor_id


def count(user_id: uuid.UUID) -> int:
    return db.session.scalar(
        select(func.count())
        .select_from(Factor)
        .where(Factor.user_id == user_id, Factor.type == PASSKEY)
    )


def descriptors(user_id: uuid.UUID) -> list[Any]:
    """The user's passkeys as the options name them: (credential_id, transports)."""
    return list(
        db.session.execute(
            select(Factor.credential_id, Factor.transports)
            .where(Factor.user_id == user_id, Factor.type == PASSKEY)
            .order_by(Factor.created_at, Factor.id)
        )
    )


def exists(credential_id: str) -> bool:
    found = db.session.scalar(select(Factor.id).where(Factor.credential_id == credential_id))
    return found is not None


def by_credential_id(credential_id: str) -> Any:
    """The passkey and what a login with it needs of its user: (id, user_id, public_key,
    sign_count, device_type, password_version, disabled_at); None if unknown."""
    return db.session.execute(
        select(
            Factor.id,
            Factor.user_id,
            Factor.public_key,
            Factor.sign_count,
            Factor.device_type,
            User.password_version,
            User.disabled_at,
        )
        .join(User, User.id == Factor.user_id)
        .where(
            Factor.credential_id == credential_id,
            Factor.type == PASSKEY,
            Factor.confirmed_at.is_not(None),
        )
    ).first()


def advance(factor_id: uuid.UUID, checked_count: int, new_count: int, now: datetime) -> bool:
    """Record a use: the counter goes from ``checked_count`` (what the assertion was verified
    against) to ``new_count``; whether this call did (a parallel use may have moved it)."""
    result = db.session.execute(
        update(Factor)
        .where(
            Factor.id == factor_id,
            Factor.type == PASSKEY,
            Factor.sign_count == checked_count,
        )
        .values(sign_count=new_count, last_used_at=now)
    )
    return result.rowcount == 1
