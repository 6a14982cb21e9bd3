"""Every statement on the ``outbox`` table (DESIGN §9, delivery).

A sender claims each due row with one UPDATE whose subquery locks it (``FOR UPDATE SKIP LOCKED``
on PostgreSQL: two replicas claiming at once get disjoint rows; SQLite has one writer, so the
UPDATE alone is atomic). A claim carries an id and runs out: only the claimant may finish the
row, and a row whose sender died is claimed again once its claim has expired.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, false, func, insert, or_, select, update

from ..extensions import db
from ..models import OutboxMessage
from .database import single_statement

QUEUED, SENT, FAILED, DONE = "queued", "sent", "failed", "done"  # done: a resolved request
# Where add() marks the ORM session, for the after_commit hook that wakes the sender
# (authsvc.runtime), as sessions.revoke() notes what to announce.
QUEUED_PENDING_KEY = "authsvc.outbox"


def add(
    message_id: uuid.UUID,
    recipient: str,
    template: str,
    payload: bytes,
    now: datetime,
    expires_at: datetime,
) -> None:
    """Queue a message in the caller's transaction (with the token it carries)."""
    db.session.execute(
        insert(OutboxMessage).values(
            id=message_id,
            recipient=recipient,
            template=template,
            payload_encrypted=payload,
            status=QUEUED,
            attempts=0,
            created_at=now,
            next_attempt_at=now,
            expires_at=expires_at,
        )
    )
    db.session.info[QUEUED_PENDING_KEY] = True


def add_nothing() -> None:
    """The INSERT of ``add`` selecting no row (see ``one_time_tokens.add_nothing``)."""
    columns = ["id", "recipient", "template", "status", "attempts", "created_at"]
    db.session.execute(
        insert(OutboxMessage).from_select(
            [*columns, "next_attempt_at", "expires_at"],
            select(
                *(getattr(OutboxMessage, name) for name in columns),
                OutboxMessage.next_attempt_at,
                OutboxMessage.expires_at,
            ).where(false()),
        )
    )


def _due(now: datetime) -> Any:
    return and_(
        OutboxMessage.status == QUEUED,
        OutboxMessage.next_attempt_at <= now,
        or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
    )


def any_due(now: datetime) -> bool:
    """A read, so an idle sender's poll never takes SQLite's write lock."""
    with single_statement() as connection:
        found = connection.execute(select(OutboxMessage.id).where(_due(now)).limit(1)).first()
    return found is not None


def claim(now: datetime, until: datetime, claim_id: uuid.UUID) -> Any:
    """Claim the oldest due message for ``claim_id`` until ``until``: the row, or None.

    One at a time, so a claim's lease covers one send, never a queue. The row is chosen by a
    scalar subquery (``id = (SELECT ... LIMIT 1 FOR UPDATE SKIP LOCKED)``): with ``id IN
    (...)`` PostgreSQL may evaluate the subquery again per row and claim several.
    """
    chosen = (
        select(OutboxMessage.id)
        .where(_due(now))
        .order_by(OutboxMessage.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    statement = (
        update(OutboxMessage)
        .where(OutboxMessage.id == chosen, _due(now))
        .values(claim_id=claim_id, claimed_until=until, attempts=OutboxMessage.attempts + 1)
        .returning(
            OutboxMessage.id,
            OutboxMessage.recipient,
            OutboxMessage.template,
            OutboxMessage.payload_encrypted,
            OutboxMessage.attempts,
            OutboxMessage.created_at,
            OutboxMessage.expires_at,
        )
    )
    with single_statement(writes=True) as connection:
        return connection.execute(statement).first()


def _finish(message_id: uuid.UUID, claim_id: uuid.UUID, **values: Any) -> bool:
    statement = (
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.claim_id == claim_id)
        .values(claimed_until=None, **values)
    )
    with single_statement(writes=True) as connection:
        return connection.execute(statement).rowcount == 1


def mark_sent(message_id: uuid.UUID, claim_id: uuid.UUID, now: datetime) -> bool:
    """Sent: the context (the link, the token) is erased."""
    return _finish(
        message_id, claim_id, status=SENT, sent_at=now, payload_encrypted=None, last_error=None
    )


def reschedule(
    message_id: uuid.UUID, claim_id: uuid.UUID, next_attempt_at: datetime, error: str
) -> bool:
    return _finish(message_id, claim_id, next_attempt_at=next_attempt_at, last_error=error)


def mark_failed(message_id: uuid.UUID, claim_id: uuid.UUID, error: str, *, erase: bool) -> bool:
    """Given up. The context is kept for ``flask outbox retry`` unless ``erase`` (expired)."""
    values: dict[str, Any] = {"status": FAILED, "last_error": error}
    if erase:
        values["payload_encrypted"] = None
    return _finish(message_id, claim_id, **values)


def finish_request(message_id: uuid.UUID, claim_id: uuid.UUID, now: datetime) -> bool:
    """A resolved request, in the caller's transaction (with what resolving it made), if the
    caller still holds its claim; whether it did."""
    result = db.session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.claim_id == claim_id)
        .values(status=DONE, sent_at=now, payload_encrypted=None, claimed_until=None)
    )
    return result.rowcount == 1


def retry(now: datetime, message_ids: list[uuid.UUID] | None) -> int:
    """Queue failed messages again (those named, or all) whose link has not expired."""
    conditions = [
        OutboxMessage.status == FAILED,
        OutboxMessage.payload_encrypted.is_not(None),
        OutboxMessage.expires_at > now,
    ]
    if message_ids is not None:
        conditions.append(OutboxMessage.id.in_(message_ids))
    statement = (
        update(OutboxMessage)
        .where(*conditions)
        .values(status=QUEUED, next_attempt_at=now, attempts=0, claimed_until=None)
    )
    with single_statement(writes=True) as connection:
        return connection.execute(statement).rowcount


def listed(status: str | None, limit: int) -> list[Any]:
    """The newest messages (never their context)."""
    statement = select(
        OutboxMessage.id,
        OutboxMessage.recipient,
        OutboxMessage.template,
        OutboxMessage.status,
        OutboxMessage.attempts,
        OutboxMessage.created_at,
        OutboxMessage.next_attempt_at,
        OutboxMessage.sent_at,
        OutboxMessage.last_error,
    ).order_by(OutboxMessage.created_at.desc())
    if status is not None:
        statement = statement.where(OutboxMessage.status == status)
    with single_statement() as connection:
        return list(connection.execute(statement.limit(limit)))


def oldest_queued() -> datetime | None:
    with single_statement() as connection:
        return connection.execute(
            select(func.min(OutboxMessage.created_at)).where(OutboxMessage.status == QUEUED)
        ).scalar()


def delete_done(before: datetime) -> int:
    """Sent and failed messages older than ``before`` (the caller's transaction)."""
    result = db.session.execute(
        delete(OutboxMessage).where(
            OutboxMessage.status.in_([SENT, FAILED, DONE]), OutboxMessage.created_at < before
        )
    )
    return result.rowcount


def delete_for_recipients(addresses: list[str]) -> int:
    """Every message to these addresses, whatever its state (an erased account's mail: the
    row holds the address). Compared case-insensitively, as the address's unique key is."""
    if not addresses:
        return 0
    lowered = [address.lower() for address in addresses]
    result = db.session.execute(
        delete(OutboxMessage).where(func.lower(OutboxMessage.recipient).in_(lowered))
    )
    return result.rowcount or 0
