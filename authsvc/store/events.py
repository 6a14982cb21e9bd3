"""Every statement on ``audit_events`` (DESIGN §11): written in the caller's transaction, or
alone; listed newest first by keyset (``at``, ``id``); erased of a deleted user's address;
pruned by age."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update

from ..extensions import db
from ..models import AuditEvent
from .database import single_statement

_COLUMNS = (
    AuditEvent.id,
    AuditEvent.type,
    AuditEvent.at,
    AuditEvent.user_id,
    AuditEvent.actor_id,
    AuditEvent.ip,
    AuditEvent.request_id,
    AuditEvent.detail,
)


# Core, not the ORM's bulk insert: this runs in every login.
_INSERT = insert(AuditEvent.__table__)


def add(rows: Sequence[dict[str, Any]]) -> None:
    """In the caller's transaction: the rows commit or roll back with the action."""
    db.session.connection().execute(_INSERT, list(rows))


def add_alone(rows: Sequence[dict[str, Any]]) -> None:
    """Outside any transaction (an event of a request that writes nothing else: a failed
    login), one autocommit statement."""
    with single_statement(writes=True) as connection:
        connection.execute(_INSERT, list(rows))


def page(
    *,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None = None,
    user_id: uuid.UUID | None = None,
    types: Sequence[str] = (),
    since: datetime | None = None,
) -> list[Any]:
    """Up to ``limit`` events, newest first, strictly older than the position ``before`` (the
    last row of the previous page): a keyset, so rows written meanwhile (all newer) never push
    an older one onto the next page twice, nor off it."""
    query = select(*_COLUMNS)
    if user_id is not None:
        query = query.where(AuditEvent.user_id == user_id)
    if types:
        query = query.where(AuditEvent.type.in_(list(types)))
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if before is not None:
        at, event_id = before
        query = query.where(
            or_(AuditEvent.at < at, and_(AuditEvent.at == at, AuditEvent.id < event_id))
        )
    query = query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    return list(db.session.execute(query))


def last_of_type(user_id: uuid.UUID, event_type: str) -> datetime | None:
    return db.session.scalar(
        select(AuditEvent.at)
        .where(AuditEvent.user_id == user_id, AuditEvent.type == event_type)
        .order_by(AuditEvent.at.desc())
        .limit(1)
    )


def forget_user(user_id: uuid.UUID) -> None:
    """A deleted user's events (those about them, and those they did as an admin) keep their
    ids, type and time, not where they came from."""
    db.session.execute(
        update(AuditEvent)
        .where(or_(AuditEvent.user_id == user_id, AuditEvent.actor_id == str(user_id)))
        .values(ip=None)
    )


def delete_before(before: datetime) -> int:
    result = db.session.execute(delete(AuditEvent).where(AuditEvent.at < before))
    return result.rowcount or 0


def of_user(user_id: uuid.UUID, limit: int) -> list[Any]:
    """The user's events, newest first (their export)."""
    return page(limit=limit, user_id=user_id)
