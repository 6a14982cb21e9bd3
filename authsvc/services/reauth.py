"""Asking a logged-in user to prove it again before a change only they should make: the
current password for a new password, a new address, a second factor added or removed, and a
session proven with a second factor to add another (DESIGN §5, §10)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from ..audit import security_event
from ..errors import InsufficientAuthentication, InvalidCredentials, TokenRevoked
from ..models import AccessContext
from ..runtime import runtime
from ..store import factors as factor_store
from ..store import sessions as session_store
from ..store import users as user_store


def check_current_password(user_id: uuid.UUID, password: str, *, scope: str, event: str) -> Any:
    """The user's password row (id, username, password_hash, password_version, disabled_at) if
    ``password`` is theirs; InvalidCredentials (and the ``event`` logged) if not.

    The guess is reserved first, per user in ``scope`` (each action its own budget: a stranger
    spraying logins at this username must not also block the owner, who needs a live session
    to ask), and given back only when the password is right. Nothing is held while it hashes.
    """
    rt = runtime()
    guess = rt.failures.reserve(scope, str(user_id), rt.settings.ratelimit_login_username)
    row = user_store.password_row(user_id)  # autocommit: no transaction is held while hashing
    if row is None:
        raise TokenRevoked()
    if len(password) > rt.settings.password_max_length:
        raise InvalidCredentials()
    ok, _ = rt.hasher.verify_and_update(password, row.password_hash)
    if not ok:
        security_event(event, user_id=str(row.id))
        raise InvalidCredentials("The current password is incorrect.")
    guess.succeeded()
    return row


def factor_added(
    user_id: uuid.UUID, session_id: uuid.UUID | None, amr: str, now: datetime
) -> tuple[bool, int]:
    """In the transaction that adds a factor, before it counts: a password-only login in
    flight gets no session (``users.factor_version``); a first factor also revokes the user's
    other aal1 sessions (they were one password away) and raises the adding session to aal2
    (its user just gave the password and ``amr``). Whether it is the first, and how many
    sessions were revoked."""
    first = factor_store.count_confirmed(user_id) == 0
    user_store.factor_added(user_id)
    if not first:
        return False, 0
    revoked = session_store.revoke(
        user_id=user_id, except_session_id=session_id, aal="aal1", reason="mfa_enabled"
    )
    if session_id is not None:
        session_store.raise_assurance(session_id, ["pwd", amr], "aal2", now)
    return True, revoked


def require_step_up_to_add(context: AccessContext) -> None:
    """An account that has a factor gets another only from a session proven with one (aal2):
    a stolen password and access token must not add the thief's own factor next to the
    owner's (and, with it, a new set of recovery codes)."""
    # The session row, not the token: a first factor raises the session that added it to aal2
    # at once, before its access token is refreshed.
    if (
        factor_store.count_confirmed(context.user.id) > 0
        and session_store.assurance(context.session_id) != "aal2"
    ):
        security_event("mfa_change_failed", user_id=str(context.user.id), reason="aal1_session")
        raise InsufficientAuthentication()
