"""An operator's work (the flask CLI today): accounts, sessions, the outbox, pruning."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy.exc import IntegrityError

from ..errors import EmailTaken, NotFound, UsernameTaken
from ..mail.backends import MailError
from ..models import User, utcnow
from ..observability import security_event
from ..runtime import runtime
from ..security import emails, keys, usernames
from ..store import challenges as challenge_store
from ..store import factors as factor_store
from ..store import one_time_tokens as token_store
from ..store import outbox as outbox_store
from ..store import sessions as session_store
from ..store import users as user_store
from ..store.database import write_transaction
from . import email as email_service

# Revoked sessions stay listed for audit this long before `prune` deletes them; spent one-time
# tokens and finished outbox messages likewise, for support questions ("did the mail go?").
REVOKED_SESSION_KEEP = timedelta(days=1)
SPENT_TOKEN_KEEP = timedelta(days=1)
FINISHED_MESSAGE_KEEP = timedelta(days=7)
# A TOTP enrolment can be confirmed for 10 minutes (services/mfa.py); after a day it is junk.
ENROLMENT_KEEP = timedelta(days=1)


def find_user(username: str) -> User:
    user = user_store.named(usernames.normalize(username))
    if user is None:
        raise NotFound(f"No user named {usernames.normalize(username)!r}.")
    return user


def create_user(username: str, password: str, roles: list[str], email: str | None = None) -> User:
    """An operator's account; an address given here counts as verified (the operator vouches)."""
    rt = runtime()
    normalized = usernames.validate(username)
    address = emails.parse(email) if email is not None else None
    password_hash = rt.hasher.hash(rt.password_policy.check(password, username=normalized))
    try:
        with write_transaction():
            user = User(
                id=uuid.uuid4(),
                username=normalized,
                password_hash=password_hash,
                roles=roles,
                email=address.address if address else None,
                email_key=address.key if address else None,
                email_verified_at=utcnow() if address else None,
            )
            user_store.add(user)
    except IntegrityError as error:
        raise EmailTaken() if user_store.email_was_taken(error) else UsernameTaken() from None
    security_event("user_created", user_id=str(user.id), roles=roles)
    return user


def disable_user(username: str) -> int:
    """Disable the account and revoke every session at once; the number revoked."""
    user = find_user(username)
    with write_transaction():
        user_store.disable(user.id)
        count = session_store.revoke(user_id=user.id, reason="user_disabled")
        email_service.void_for_new_password(user.id)
    security_event("user_disabled", user_id=str(user.id), sessions_revoked=count)
    return count


def reset_mfa(username: str) -> int:
    """An operator's answer to a lost phone and lost codes: every factor and recovery code of
    the account removed (its next login is a password alone), every session revoked and the
    user told. The number of factors removed."""
    user = find_user(username)
    now = utcnow()
    with write_transaction():
        removed = factor_store.delete_all(user.id)
        factor_store.delete_recovery_codes(user.id)
        challenge_store.void_for_user(user.id, now)
        count = session_store.revoke(user_id=user.id, reason="mfa_reset")
        email_service.notify(user.id, "mfa_changed", change="Every second factor was removed from")
    security_event(
        "mfa_disabled", user_id=str(user.id), by="operator", factors=removed, sessions_revoked=count
    )
    return removed


def set_password(username: str, password: str) -> int:
    """An operator's reset: new password, every session revoked; the number revoked."""
    rt = runtime()
    user = find_user(username)
    new_hash = rt.hasher.hash(rt.password_policy.check(password, username=user.username))
    with write_transaction():
        user_store.set_password_hash(user.id, new_hash)
        count = session_store.revoke(user_id=user.id, reason="password_reset")
        email_service.void_for_new_password(user.id)
    security_event("password_reset", user_id=str(user.id), sessions_revoked=count)
    return count


def list_users() -> list[User]:
    return user_store.all_by_creation()


def revoke_user_sessions(username: str) -> int:
    user = find_user(username)
    with write_transaction():
        count = session_store.revoke(user_id=user.id, reason="revoked_by_operator")
    security_event("sessions_revoked", user_id=str(user.id), scope="operator", count=count)
    return count


def revoke_session_by_id(session_id: uuid.UUID) -> int:
    with write_transaction():
        count = session_store.revoke(session_id=session_id, reason="revoked_by_operator")
    if count:
        security_event("sessions_revoked", session_id=str(session_id), scope="operator", count=1)
    return count


@dataclass(frozen=True)
class Pruned:
    sessions: int
    keys: int
    one_time_tokens: int
    messages: int
    challenges: int  # spent or expired mfa_tokens and WebAuthn challenges, abandoned enrolments


def prune() -> Pruned:
    """Delete expired sessions, long-revoked sessions, dead one-time tokens, old outbox
    messages (sent or failed), dead MFA challenges, abandoned TOTP enrolments and dead keys.

    A token naming a deleted session is rejected like a revoked one, so deleting is always safe.
    """
    now = utcnow()
    with write_transaction():
        sessions = session_store.delete_dead(revoked_before=now - REVOKED_SESSION_KEEP)
        tokens = token_store.delete_dead(now, spent_before=now - SPENT_TOKEN_KEEP)
        messages = outbox_store.delete_done(before=now - FINISHED_MESSAGE_KEEP)
        challenges = challenge_store.delete_dead(now)
        challenges += factor_store.delete_abandoned(created_before=now - ENROLMENT_KEEP)
    dead_keys = keys.delete_dead_keys(runtime().keyring.policy.retain_retired)
    return Pruned(
        sessions=sessions,
        keys=dead_keys,
        one_time_tokens=tokens,
        messages=messages,
        challenges=challenges,
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
