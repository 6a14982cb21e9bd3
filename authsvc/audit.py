"""Security events (DESIGN §7, §11): each one is a JSON log line and an ``audit_events`` row.

Inside a ``write_transaction()`` the row is written in that transaction, so it commits with the
action or not at all, and its log line follows the commit. Elsewhere (a refused login writes
nothing else) the row is one autocommit statement of its own. A failure recorded inside a
transaction that then rolls back (a replayed code found mid-transaction) is marked ``alone``:
its row is written again, by itself, after the rollback, since the attempt did happen.

The row names who acted (``actor_id``: the verified caller of the request, a user or an admin
token's operator), the client address and the request id; ``detail`` holds the event's other
fields (reasons, counts, session ids), never a secret.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Flask
from sqlalchemy import event as orm_event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as OrmSession

from .extensions import db
from .models import utcnow
from .observability import log_security_event, request_facts
from .store import events as event_store
from .store.database import after_rollback, in_write_transaction, write_transaction

log = logging.getLogger("authsvc.audit")

_LOG_PENDING = "authsvc_audit_log"  # log lines waiting for the commit


def prepared(
    event: str,
    *,
    user_id: str | uuid.UUID | None = None,
    actor_id: str | None = None,
    **detail: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The audit row of ``event`` and its log line's fields, for a caller that writes the row
    in a statement of its own (a login's session insert) and then calls ``logged``.
    ``actor_id``: who acted, where no request says it (the CLI)."""
    request_id, ip, caller = request_facts()
    actor_id = actor_id or caller
    subject = uuid.UUID(str(user_id)) if user_id is not None else None
    row = {
        "id": uuid.uuid4(),
        "type": event,
        "at": utcnow(),
        "user_id": subject,
        "actor_id": actor_id,
        "ip": ip,
        "request_id": request_id,
        "detail": detail,
    }
    line = {
        "request_id": request_id,
        "user_id": str(subject) if subject else None,
        **({"actor_id": actor_id} if actor_id and actor_id != str(subject) else {}),
        **detail,
    }
    return row, line


def logged(event: str, line: dict[str, Any]) -> None:
    log_security_event(event, line)


def security_event(
    event: str,
    *,
    user_id: str | uuid.UUID | None = None,
    actor_id: str | None = None,
    alone: bool = False,
    **detail: Any,
) -> None:
    """Record ``event`` about ``user_id`` (if it concerns a user)."""
    row, line = prepared(event, user_id=user_id, actor_id=actor_id, **detail)
    if in_write_transaction():
        event_store.add([row])
        if alone:
            log_security_event(event, line)
            after_rollback(lambda: _write_again(row))
        else:
            db.session().info.setdefault(_LOG_PENDING, []).append((event, line))
        return
    if db.session().in_transaction():
        # The request holds a connection (an ORM read): write on it rather than take a second
        # one from the pool, which parallel requests could exhaust, each waiting for another.
        with write_transaction():
            event_store.add([row])
    else:
        event_store.add_alone([row])
    log_security_event(event, line)


def _write_again(row: dict[str, Any]) -> None:
    """The row of a failure recorded in a transaction that rolled back: the attempt was real."""
    try:
        event_store.add_alone([row])
    except SQLAlchemyError:
        # The database that rolled the action back may be gone; the log line was written.
        log.warning("an audit row of a rolled-back transaction could not be written")


def _after_commit(orm_session: OrmSession) -> None:
    for event, line in orm_session.info.pop(_LOG_PENDING, ()):
        log_security_event(event, line)


def _after_rollback(orm_session: OrmSession) -> None:
    orm_session.info.pop(_LOG_PENDING, None)


def register_audit(_app: Flask) -> None:
    """Install the commit hooks (``db`` is one object for every app: once)."""
    if orm_event.contains(db.session, "after_commit", _after_commit):
        return
    orm_event.listen(db.session, "after_commit", _after_commit)
    orm_event.listen(db.session, "after_rollback", _after_rollback)
