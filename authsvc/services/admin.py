"""An operator's work (the flask CLI today): accounts, sessions, pruning."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import IntegrityError

from ..errors import NotFound, UsernameTaken
from ..models import User, utcnow
from ..observability import security_event
from ..runtime import runtime
from ..security import keys, usernames
from ..store import sessions as session_store
from ..store import users as user_store
from ..store.database import write_transaction

# Revoked sessions stay listed for audit this long before `prune` deletes them.
REVOKED_SESSION_KEEP = timedelta(days=1)


def find_user(username: str) -> User:
    user = user_store.named(usernames.normalize(username))
    if user is None:
        raise NotFound(f"No user named {usernames.normalize(username)!r}.")
    return user


def create_user(username: str, password: str, roles: list[str]) -> User:
    rt = runtime()
    normalized = usernames.validate(username)
    password_hash = rt.hasher.hash(rt.password_policy.check(password, username=normalized))
    try:
        with write_transaction():
            user = User(
                id=uuid.uuid4(), username=normalized, password_hash=password_hash, roles=roles
            )
            user_store.add(user)
    except IntegrityError:
        raise UsernameTaken() from None
    security_event("user_created", user_id=str(user.id), roles=roles)
    return user


def disable_user(username: str) -> int:
    """Disable the account and revoke every session at once; the number revoked."""
    user = find_user(username)
    with write_transaction():
        user_store.disable(user.id)
        count = session_store.revoke(user_id=user.id, reason="user_disabled")
    security_event("user_disabled", user_id=str(user.id), sessions_revoked=count)
    return count


def set_password(username: str, password: str) -> int:
    """An operator's reset: new password, every session revoked; the number revoked."""
    rt = runtime()
    user = find_user(username)
    new_hash = rt.hasher.hash(rt.password_policy.check(password, username=user.username))
    with write_transaction():
        user_store.set_password_hash(user.id, new_hash)
        count = session_store.revoke(user_id=user.id, reason="password_reset")
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


def prune() -> Pruned:
    """Delete expired sessions, long-revoked sessions and dead keys.

    A token naming a deleted session is rejected like a revoked one, so deleting is always safe.
    """
    with write_transaction():
        sessions = session_store.delete_dead(revoked_before=utcnow() - REVOKED_SESSION_KEEP)
    dead_keys = keys.delete_dead_keys(runtime().keyring.policy.retain_retired)
    return Pruned(sessions=sessions, keys=dead_keys)
