"""Every statement on the ``signing_keys`` table. Each state change is conditional on the state
the caller saw, so two replicas doing the same step at the same moment make it once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, delete, select, update

from ..extensions import db
from ..models import SigningKey


def in_states(states: tuple[str, ...]) -> list[SigningKey]:
    return list(db.session.scalars(select(SigningKey).where(SigningKey.state.in_(states))))


def add(row: SigningKey) -> None:
    """Insert now (flush): the partial unique indexes (one active, one next) decide."""
    db.session.add(row)
    db.session.flush()


def move(kid: str, from_state: str, to_state: str, **values: datetime) -> bool:
    """One conditional state change: True if this call made it (the key was still in
    ``from_state``)."""
    changed = db.session.execute(
        update(SigningKey)
        .where(SigningKey.kid == kid, SigningKey.state == from_state)
        .values(state=to_state, **values)
    ).rowcount
    return changed == 1


def retired_before(cutoff: datetime) -> list[str]:
    return list(
        db.session.scalars(
            select(SigningKey.kid).where(
                SigningKey.state == "retired", SigningKey.retired_at <= cutoff
            )
        )
    )


def delete_kids(kids: list[str]) -> None:
    db.session.execute(delete(SigningKey).where(SigningKey.kid.in_(kids)))


def all_in_lifecycle_order() -> list[SigningKey]:
    order = case({"active": 0, "next": 1, "retired": 2}, value=SigningKey.state, else_=3)
    return list(db.session.scalars(select(SigningKey).order_by(order, SigningKey.created_at)))


def set_hmac_key_if_missing(kid: str, encrypted: bytes) -> bool:
    changed = db.session.execute(
        update(SigningKey)
        .where(SigningKey.kid == kid, SigningKey.hmac_key_encrypted.is_(None))
        .values(hmac_key_encrypted=encrypted)
    ).rowcount
    return changed == 1
