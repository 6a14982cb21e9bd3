"""Administration (DESIGN §11): accounts, their roles, sessions and factors, and the audit
trail, for the admin API and the flask CLI.

``actor`` is who asks: the admin API's ``AdminCaller``, or None for the CLI (the operator at
the server, like an operator's admin token, may grant any role). An admin grants only roles it
holds itself; the last active admin is never demoted, disabled or deleted
(``lifecycle.keep_an_admin``). Each change is one transaction with its audit events.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from ..audit import security_event
from ..config_admin import ROLE_NAME
from ..errors import EmailTaken, InvalidRequest, NotFound, RoleNotHeld, UsernameTaken
from ..models import AdminCaller, Session, User, utcnow
from ..runtime import runtime
from ..security import emails, usernames
from ..store import challenges as challenge_store
from ..store import events as event_store
from ..store import factors as factor_store
from ..store import sessions as session_store
from ..store import users as user_store
from ..store.database import write_transaction
from . import cursors, lifecycle
from . import email as email_service

MAX_ROLES = 32


@dataclass(frozen=True)
class UserDetail:
    """What GET /admin/users/{id} shows: the user, their factors (no secret), last login."""

    user: User
    factors: list[Any]  # id, type, created_at, last_used_at
    last_login_at: datetime | None


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None


# --- finding accounts ---------------------------------------------------------------------


def find_user(username: str) -> User:
    user = user_store.named(usernames.normalize(username))
    if user is None:
        raise NotFound(f"No user named {usernames.normalize(username)!r}.")
    return user


def get_user(user_id: uuid.UUID) -> User:
    user = user_store.get(user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


def list_users(query: str | None, limit: int, cursor: str | None) -> Page:
    """Users in creation order; ``query``: a username or address prefix (compared as the
    stored forms are: case-folded)."""
    after = cursors.decode(cursor) if cursor else None
    prefix = usernames.normalize(query) if query else None
    rows = user_store.page(limit=limit + 1, after=after, prefix=prefix)
    return _page(rows, limit, lambda user: cursors.encode(user.created_at, user.id))


def all_users() -> list[User]:
    return user_store.all_by_creation()


def user_detail(user_id: uuid.UUID) -> UserDetail:
    user = get_user(user_id)
    return UserDetail(
        user=user,
        factors=factor_store.confirmed(user.id),
        last_login_at=event_store.last_of_type(user.id, "login"),
    )


def _page(rows: list[Any], limit: int, position: Any) -> Page:
    """``rows`` holds up to ``limit + 1`` rows: one more means there is a next page."""
    items = rows[:limit]
    more = len(rows) > limit
    return Page(items, position(items[-1]) if more and items else None)


# --- roles --------------------------------------------------------------------------------


def checked_roles(roles: Sequence[str]) -> list[str]:
    """Role names as stored: each a name (letters, digits, ``_ . : -``, up to 64), no
    duplicates, sorted, at most MAX_ROLES."""
    unique = sorted(set(roles))
    if len(unique) > MAX_ROLES:
        raise InvalidRequest(f"At most {MAX_ROLES} roles.")
    bad = [role for role in unique if not ROLE_NAME.match(role)]
    if bad:
        raise InvalidRequest("A role name is letters, digits and _ . : - (up to 64).")
    return unique


def _may_grant(actor: AdminCaller | None, added: set[str]) -> None:
    """In the caller's transaction, after ``lock_role_changes``: the roles ``actor`` holds now
    (stored, read again: it may have lost one since its request was let in) cover ``added``."""
    if actor is None or actor.roles is None or actor.user_id is None or not added:
        return
    current = user_store.get(actor.user_id)
    held = set(current.roles or []) if current is not None and current.is_active else set()
    if not added <= held:
        raise RoleNotHeld()


# --- creating, changing, deleting ---------------------------------------------------------


def create_user(
    username: str,
    password: str | None,
    roles: Sequence[str],
    email: str | None = None,
    actor: AdminCaller | None = None,
) -> User:
    """An account made by an admin or the operator. An address given here counts as verified
    (whoever made the account vouches for it). Without a password nobody can log in with one
    until a reset link sets it (the account holds the hash of a random secret)."""
    rt = runtime()
    normalized = usernames.validate(username)
    granted = checked_roles(roles)
    address = emails.parse(email) if email is not None else None
    if password is None:
        password_hash = rt.hasher.hash(secrets.token_urlsafe(32))
    else:
        password_hash = rt.hasher.hash(rt.password_policy.check(password, username=normalized))
    try:
        with write_transaction():
            user_store.lock_role_changes()
            _may_grant(actor, set(granted))
            user = User(
                id=uuid.uuid4(),
                username=normalized,
                password_hash=password_hash,
                roles=granted,
                email=address.address if address else None,
                email_key=address.key if address else None,
                email_verified_at=utcnow() if address else None,
            )
            user_store.add(user)
            security_event("user_created", user_id=str(user.id), roles=granted)
    except IntegrityError as error:
        raise EmailTaken() if user_store.email_was_taken(error) else UsernameTaken() from None
    return user


def update_user(
    user_id: uuid.UUID,
    *,
    roles: Sequence[str] | None = None,
    disabled: bool | None = None,
    revoke_sessions: bool = False,
    actor: AdminCaller | None = None,
) -> UserDetail:
    """Set the roles (the whole list), disable or enable, revoke every session; any of them.
    A role change reaches tokens at the next refresh (``revoke_sessions``: at once)."""
    new_roles = checked_roles(roles) if roles is not None else None
    admin_role = runtime().settings.admin.role
    with write_transaction():
        # Before anything is read: a parallel change of these roles is decided first, so
        # ``old_roles`` (what counts as added) and the actor's own roles are current.
        user_store.lock_role_changes()
        user = get_user(user_id)
        old_roles = set(user.roles or [])
        if new_roles is not None:
            _may_grant(actor, set(new_roles) - old_roles)
        stays_admin = admin_role in (new_roles if new_roles is not None else old_roles)
        lifecycle.keep_an_admin(user, stays_admin=stays_admin and disabled is not True)
        changes: dict[str, Any] = {}
        if new_roles is not None and set(new_roles) != old_roles:
            user_store.set_roles(user.id, new_roles)
            session_store.user_changed(user.id)  # every process re-reads the roles at once
            changes["roles_added"] = sorted(set(new_roles) - old_roles)
            changes["roles_removed"] = sorted(old_roles - set(new_roles))
        if disabled is True and user.is_active:
            changes["sessions_revoked"] = _disable(user.id)
            changes["disabled"] = True
        elif disabled is False and not user.is_active:
            user_store.enable(user.id)
            session_store.user_changed(user.id)
            changes["disabled"] = False
        if revoke_sessions:
            count = session_store.revoke(user_id=user.id, reason="revoked_by_admin")
            security_event("session_revoked", user_id=str(user.id), scope="admin", count=count)
            changes["sessions_revoked"] = changes.get("sessions_revoked", 0) + count
        security_event("user_updated", user_id=str(user.id), **changes)
    return user_detail(user_id)


def _disable(user_id: uuid.UUID) -> int:
    """In the caller's transaction: disabled, every session revoked, pending links void."""
    user_store.disable(user_id)
    count = session_store.revoke(user_id=user_id, reason="user_disabled")
    email_service.void_for_new_password(user_id)
    security_event("user_disabled", user_id=str(user_id), sessions_revoked=count)
    return count


def delete_user(user_id: uuid.UUID) -> None:
    """Erase the account (``lifecycle.erase``); its audit events keep the id."""
    with write_transaction():
        user = get_user(user_id)
        lifecycle.keep_an_admin(user, stays_admin=False)
        lifecycle.erase(user)
        security_event("user_deleted", user_id=str(user_id))


def disable_user(username: str) -> int:
    """The CLI's disable; the number of sessions revoked."""
    with write_transaction():
        user = find_user(username)
        lifecycle.keep_an_admin(user, stays_admin=False)
        return _disable(user.id) if user.is_active else 0


def set_password(username: str, password: str) -> int:
    """An operator's reset: new password, every session revoked; the number revoked."""
    rt = runtime()
    user = find_user(username)
    new_hash = rt.hasher.hash(rt.password_policy.check(password, username=user.username))
    with write_transaction():
        user_store.set_password_hash(user.id, new_hash)
        count = session_store.revoke(user_id=user.id, reason="password_reset")
        email_service.void_for_new_password(user.id)
        security_event(
            "password_reset", user_id=str(user.id), via="operator", sessions_revoked=count
        )
    return count


# --- sessions and factors -----------------------------------------------------------------


def user_sessions(user_id: uuid.UUID) -> list[Session]:
    get_user(user_id)
    return session_store.live_of_user(user_id)


def revoke_sessions(user_id: uuid.UUID, session_id: uuid.UUID | None = None) -> int:
    """Revoke one session of the user (404 if it is not theirs) or all; how many."""
    with write_transaction():
        get_user(user_id)
        if session_id is None:
            count = session_store.revoke(user_id=user_id, reason="revoked_by_admin")
        elif not session_store.owned(user_id, session_id):
            raise NotFound("No such session.")
        else:
            count = session_store.revoke(session_id=session_id, reason="revoked_by_admin")
        security_event(
            "session_revoked",
            user_id=str(user_id),
            scope="admin",
            count=count,
            **({"session_id": str(session_id)} if session_id else {}),
        )
    return count


def remove_factor(user_id: uuid.UUID, factor_id: uuid.UUID) -> None:
    """An admin's answer to a lost device: the factor removed (the last one takes the
    recovery codes with it), the user told. Sessions stay (revoke them separately)."""
    with write_transaction():
        get_user(user_id)
        user_store.lock(user_id)
        if factor_store.delete_factor(user_id, factor_id) == 0:
            raise NotFound("No such factor.")
        if factor_store.count_confirmed(user_id) == 0:
            factor_store.delete_recovery_codes(user_id)
        email_service.notify(user_id, "mfa_changed", change="An administrator removed a factor of")
        security_event("mfa_disabled", user_id=str(user_id), factor_id=str(factor_id), by="admin")


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
            "mfa_disabled",
            user_id=str(user.id),
            by="operator",
            factors=removed,
            sessions_revoked=count,
        )
    return removed


def revoke_user_sessions(username: str) -> int:
    return revoke_sessions(find_user(username).id)


def revoke_session_by_id(session_id: uuid.UUID) -> int:
    with write_transaction():
        count = session_store.revoke(session_id=session_id, reason="revoked_by_operator")
        if count:
            security_event(
                "session_revoked",
                user_id=session_store.owner_of(session_id),
                session_id=str(session_id),
                scope="operator",
            )
    return count


# --- the audit trail ----------------------------------------------------------------------


def list_events(
    *,
    limit: int,
    cursor: str | None = None,
    user_id: uuid.UUID | None = None,
    types: Sequence[str] = (),
    since: datetime | None = None,
) -> Page:
    """Audit events, newest first."""
    before = cursors.decode(cursor) if cursor else None
    rows = event_store.page(
        limit=limit + 1, before=before, user_id=user_id, types=types, since=since
    )
    return _page(rows, limit, lambda row: cursors.encode(row.at, row.id))
