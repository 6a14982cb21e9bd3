"""A user's sessions: refresh rotation with reuse detection, logout, listing, revoking one."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any, NoReturn

from ..audit import security_event
from ..errors import NotFound, TokenRevoked
from ..models import AccessContext, AuthResult, Caller, Client, LogoutScope, Session, utcnow
from ..runtime import runtime
from ..store import sessions as session_store
from ..store.database import write_transaction
from ..tokens.issue import issue_pair

log = logging.getLogger("authsvc.sessions")


def new_session_values(
    user_id: uuid.UUID, client: Client, *, amr: tuple[str, ...] = ("pwd",), aal: str = "aal1"
) -> dict[str, Any]:
    """The columns of a session created now for ``user_id``, proven by ``amr`` at ``aal``."""
    now = utcnow()
    return {
        "id": uuid.uuid4(),
        "user_id": user_id,
        "generation": 0,
        "created_at": now,
        "rotated_at": now,
        "last_used_at": now,
        "expires_at": now + timedelta(seconds=runtime().settings.session_max_age),
        "user_agent": client.user_agent,
        "ip": client.ip,
        "amr": list(amr),
        "aal": aal,
        "auth_time": now,
    }


def refresh(
    session_id: uuid.UUID, generation: int, user_id: uuid.UUID, client: Client
) -> AuthResult:
    """Rotate the session named by a verified refresh token (DESIGN §3, rotation and reuse).

    Current generation: bump it with one conditional UPDATE (of N concurrent callers exactly one
    matches). Previous generation within the grace window: re-issue for the current one. Anything
    else is reuse of a stolen or replayed token: the whole session is revoked.

    The common case is that one statement and nothing else (``store.sessions.rotate``: its
    conditions are the whole revocation check, and it returns the user's fields for the
    response). Everything else takes a transaction that reads the session and decides.
    """
    rotated = session_store.rotate(
        session_id, user_id, generation, utcnow(), client.user_agent, client.ip
    )
    if rotated is not None:
        caller = Caller.from_row(
            rotated, user_id_column="user_id", created_column="user_created_at"
        )
        required = runtime().settings.mfa.required_roles
        if required and rotated.aal != "aal2" and required & set(caller.roles):
            _refuse_password_only(session_id, caller)
        return AuthResult(caller, issue_pair(caller, rotated, fresh=False))
    return _refresh_not_current(session_id, generation, user_id)


def _refuse_password_only(session_id: uuid.UUID, caller: Caller) -> NoReturn:
    """A password-only session of a user whose role needs a second factor (the role, or
    AUTHSVC_MFA_REQUIRED_ROLES, came after the login): it ends here, and the next login goes
    through the second step or enrolment."""
    with write_transaction():
        session_store.revoke(session_id=session_id, reason="mfa_required")
        security_event(
            "session_revoked",
            user_id=str(caller.id),
            session_id=str(session_id),
            reason="mfa_required",
            count=1,
        )
    raise TokenRevoked("A role of this account needs a second factor: log in again.")


def _refresh_not_current(session_id: uuid.UUID, generation: int, user_id: uuid.UUID) -> AuthResult:
    """The refresh token is not the session's current generation, or the session is dead."""
    settings = runtime().settings
    now = utcnow()
    with write_transaction():
        found = session_store.with_user_now(session_id)
        if found is None:
            raise TokenRevoked()
        session, user = found
        dead = session.revoked_at is not None or session.expires_at <= now or not user.is_active
        if dead or session.user_id != user_id:
            raise TokenRevoked()
        in_grace = now - session.rotated_at <= timedelta(seconds=settings.refresh_reuse_grace)
        # The previous generation within the grace window is a concurrent tab or a lost
        # response: the same generation again, no bump. Anything else is reuse (the generation
        # only grows, so it cannot have become current since the UPDATE).
        reuse_detected = not (generation == session.generation - 1 and in_grace)
        if reuse_detected:
            session_store.revoke(session_id=session_id, reason="reuse_detected")
            security_event(
                "refresh_reuse_detected",
                user_id=str(user.id),
                session_id=str(session_id),
                presented_generation=generation,
                current_generation=session.generation,
            )
    if reuse_detected:
        raise TokenRevoked("The refresh token was already used; the session has been revoked.")
    return AuthResult(user, issue_pair(user, session, fresh=False))


def logout(context: AccessContext, scope: LogoutScope) -> None:
    """Revoke this session (``local``), all the user's (``global``) or all but this one."""
    user_id = context.user.id
    with write_transaction():
        if scope == "local":
            count = session_store.revoke(session_id=context.session_id, reason="logout_local")
        elif scope == "global":
            count = session_store.revoke(user_id=user_id, reason="logout_global")
        else:
            count = session_store.revoke(
                user_id=user_id, except_session_id=context.session_id, reason="logout_others"
            )
        security_event("session_revoked", user_id=str(user_id), scope=scope, count=count)


def list_sessions(user_id: uuid.UUID) -> list[Session]:
    return session_store.live_of_user(user_id)


def session_expires_at(session: Session) -> datetime:
    """When the session dies if left alone: its refresh token's expiry, capped by its max age."""
    idle_expiry = session.rotated_at + timedelta(seconds=runtime().settings.refresh_token_ttl)
    return min(idle_expiry, session.expires_at)


def revoke_session(user_id: uuid.UUID, session_id: uuid.UUID) -> None:
    with write_transaction():
        if not session_store.owned(user_id, session_id):
            # Someone else's session and a missing one look the same.
            raise NotFound("No such session.")
        count = session_store.revoke(session_id=session_id, reason="revoked_by_user")
        if count:
            security_event(
                "session_revoked", user_id=str(user_id), session_id=str(session_id), scope="one"
            )
