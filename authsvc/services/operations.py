"""An operator's routine work (the flask CLI): pruning, the outbox, a test message."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

from ..mail.backends import MailError
from ..models import utcnow
from ..runtime import runtime
from ..security import emails, keys
from ..store import challenges as challenge_store
from ..store import events as event_store
from ..store import factors as factor_store
from ..store import one_time_tokens as token_store
from ..store import outbox as outbox_store
from ..store import sessions as session_store
from ..store.database import write_transaction

# Revoked sessions stay listed for audit this long before `prune` deletes them; spent one-time
# tokens and finished outbox messages likewise, for support questions ("did the mail go?").
REVOKED_SESSION_KEEP = timedelta(days=1)
SPENT_TOKEN_KEEP = timedelta(days=1)
FINISHED_MESSAGE_KEEP = timedelta(days=7)
# A TOTP enrolment can be confirmed for 10 minutes (services/mfa.py); after a day it is junk.
ENROLMENT_KEEP = timedelta(days=1)


@dataclass(frozen=True)
class Pruned:
    sessions: int
    keys: int
    one_time_tokens: int
    messages: int
    challenges: int  # spent or expired mfa_tokens and WebAuthn challenges, abandoned enrolments
    events: int  # audit events older than AUTHSVC_AUDIT_RETENTION_DAYS


def prune() -> Pruned:
    """Delete expired sessions, long-revoked sessions, dead one-time tokens, old outbox
    messages (sent or failed), dead MFA challenges, abandoned TOTP enrolments, audit events
    past their retention and dead keys.

    A token naming a deleted session is rejected like a revoked one, so deleting is always safe.
    """
    now = utcnow()
    with write_transaction():
        sessions = session_store.delete_dead(revoked_before=now - REVOKED_SESSION_KEEP)
        tokens = token_store.delete_dead(now, spent_before=now - SPENT_TOKEN_KEEP)
        messages = outbox_store.delete_done(before=now - FINISHED_MESSAGE_KEEP)
        challenges = challenge_store.delete_dead(now)
        challenges += factor_store.delete_abandoned(created_before=now - ENROLMENT_KEEP)
        retention = timedelta(days=runtime().settings.admin.audit_retention_days)
        events = event_store.delete_before(now - retention)
    dead_keys = keys.delete_dead_keys(runtime().keyring.policy.retain_retired)
    return Pruned(
        sessions=sessions,
        keys=dead_keys,
        one_time_tokens=tokens,
        messages=messages,
        challenges=challenges,
        events=events,
    )


def list_outbox(status: str | None, limit: int) -> list[Any]:
    return outbox_store.listed(status, limit)


def retry_outbox(message_ids: list[uuid.UUID] | None) -> int:
    """Queue failed messages again (all, or those named) whose link is still live."""
    count = outbox_store.retry(utcnow(), message_ids)
    runtime().outbox.wake()
    return count


def send_test_mail(address: str) -> None:
    """Hand one message straight to the configured backend (not through the outbox): a
    MailError says what the server answered."""
    rt = runtime()
    recipient = emails.parse(address).address
    backend = rt.outbox.backend
    if backend is None:
        raise MailError("no mail server: set AUTHSVC_SMTP_URL")
    message = EmailMessage()
    message["Subject"] = "authsvc test message"
    message["From"] = rt.settings.email.mail_from
    message["To"] = recipient
    message.set_content(f"This is a test message from {rt.settings.issuer}. Mail works.\n")
    backend.send(message)
