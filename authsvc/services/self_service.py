"""A user's own account, whole (DESIGN §11): its export, and its erasure."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from ..audit import security_event
from ..errors import CodeRequired, TokenRevoked
from ..models import AccessContext, Session, User, utcnow
from ..store import events as event_store
from ..store import factors as factor_store
from ..store import sessions as session_store
from ..store import users as user_store
from ..store.database import write_transaction
from . import lifecycle, mfa
from .reauth import check_current_password

# Wrong current passwords at DELETE /me, per user (its own budget, as each action has).
DELETE_GUESSES = "delete-account"
# An export lists at most this many events (the retention period bounds them anyway).
EXPORT_EVENTS = 10_000


@dataclass(frozen=True)
class AccountData:
    """Everything the account holds that can be shown: no hash, no secret, no token."""

    user: User
    sessions: list[Session]
    factors: list[Any]  # id, type, created_at, last_used_at
    events: list[Any]


def export_account(context: AccessContext) -> AccountData:
    user_id = context.user.id
    user = user_store.get(user_id)
    if user is None:
        raise TokenRevoked()
    return AccountData(
        user=user,
        sessions=session_store.live_of_user(user_id),
        factors=factor_store.confirmed(user_id),
        events=[_own_view(row, user_id) for row in event_store.of_user(user_id, EXPORT_EVENTS)],
    )


def _own_view(row: Any, user_id: Any) -> Any:
    """An event as its user may see it: what someone else (an admin) did keeps the type, time
    and detail, not who did it nor from where."""
    if row.actor_id in (None, str(user_id)):
        return row
    return SimpleNamespace(**{**row._mapping, "actor_id": None, "ip": None})


def delete_account(context: AccessContext, current_password: str, code: str | None) -> None:
    """Erase the caller's account (``lifecycle.erase``): the current password, and a code
    (TOTP or recovery) when it has a second factor. The last active admin cannot."""
    user_id = context.user.id
    check_current_password(
        user_id, current_password, scope=DELETE_GUESSES, event="account_delete_failed"
    )
    guess = proof = None
    if factor_store.count_confirmed(user_id) > 0:
        if code is None:
            raise CodeRequired()
        guess, proof = mfa.check_code(user_id, code, event="account_delete_failed")
    with write_transaction():
        user = user_store.get(user_id)
        if user is None:
            raise TokenRevoked()
        if proof is not None:
            proof.take(utcnow())
            if proof.recovery:
                security_event("recovery_code_used", user_id=str(user_id))
        lifecycle.keep_an_admin(user, stays_admin=False)
        # Before the erasure, which leaves this row, like the others, the id alone.
        security_event("user_deleted", user_id=str(user_id), by="self")
        lifecycle.erase(user)
    if guess is not None:
        guess.succeeded()
