"""Signing up, logging in, changing the password."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError

from .. import audit
from ..audit import security_event
from ..errors import (
    EmailNotVerified,
    EmailRequired,
    EmailTaken,
    InvalidCredentials,
    InvalidRequest,
    TokenRevoked,
    UsernameTaken,
)
from ..models import AccessContext, AuthResult, Caller, Client, Session, User
from ..runtime import runtime
from ..security import emails, usernames
from ..security.attempts import Reservation
from ..store import sessions as session_store
from ..store import users as user_store
from ..store.database import write_transaction
from ..tokens.issue import issue_pair
from . import email as email_service
from . import mfa
from .reauth import check_current_password
from .sessions import new_session_values

# Failure counters: wrong passwords at login per account (by the submitted username), and
# wrong current passwords at /password per user.
PASSWORD_GUESSES = "login-password"  # noqa: S105 (a counter name)
PASSWORD_CHANGE_GUESSES = "change-password"  # noqa: S105 (a counter name)


def signup(username: str, password: str, client: Client, email: str | None = None) -> AuthResult:
    """A new account and, unless AUTHSVC_EMAIL_VERIFICATION=required, its first session (then
    ``tokens`` is None: the user logs in once the address is verified)."""
    rt = runtime()
    normalized = usernames.validate(username)
    address = emails.parse(email) if email is not None else None
    required = rt.settings.email.verification == "required"
    if required and address is None:
        raise EmailRequired()
    checked = rt.password_policy.check(password, username=normalized)
    password_hash = rt.hasher.hash(checked)
    session: Session | None = None
    try:
        with write_transaction():
            user = User(
                id=uuid.uuid4(),
                username=normalized,
                password_hash=password_hash,
                roles=[],
                email=address.address if address else None,
                email_key=address.key if address else None,
            )
            # The unique indexes decide, not a prior lookup: of many parallel signups for one
            # name (or one address) exactly one insert succeeds.
            user_store.add(user)
            if not required:
                session = Session(**new_session_values(user.id, client))
                session_store.add(session)
            email_service.issue_signup_verification(user)
            security_event(
                "signup", user_id=str(user.id), session_id=str(session.id) if session else None
            )
    except IntegrityError as error:
        raise EmailTaken() if user_store.email_was_taken(error) else UsernameTaken() from None
    return AuthResult(user, issue_pair(user, session, fresh=True) if session else None)


def login(username: str, password: str, client: Client) -> AuthResult:
    rt = runtime()
    if len(username) > usernames.MAX_LENGTH or len(password) > rt.settings.password_max_length:
        raise InvalidRequest("The username or password is too long.")
    normalized = usernames.normalize(username)
    # Reserved before anything is checked, given back only by a successful login (DESIGN §5).
    guess = rt.failures.reserve(PASSWORD_GUESSES, normalized, rt.settings.ratelimit_login_username)
    # One autocommit read: no connection is held while the password is hashed.
    user = user_store.login_row(normalized)
    if user is None:
        # Same work, same answer as a wrong password: no way to tell which usernames exist.
        rt.hasher.dummy_verify(password)
        security_event("login_failed", user_id=None, reason="unknown_user")
        raise InvalidCredentials()
    started = time.perf_counter()
    ok, new_hash = rt.hasher.verify_and_update(password, user.password_hash)
    if not ok or user.disabled_at is not None:
        # A hash stored under older, cheaper parameters (or a legacy scheme) verifies faster
        # than the dummy an unknown user costs: wait out the difference, so a dormant account
        # answers like a missing one (DESIGN §5, timing).
        rt.hasher.pad_failure(user.password_hash, started)
        security_event(
            "login_failed", user_id=str(user.id), reason="disabled" if ok else "wrong_password"
        )
        raise InvalidCredentials()
    if rt.settings.email.verification == "required" and not (
        user.email is not None and user.email_verified_at is not None
    ):
        # Only now, after the right password: nobody learns whether an address is verified.
        guess.succeeded()
        security_event("login_refused", user_id=str(user.id), reason="email_not_verified")
        raise EmailNotVerified()
    _second_step_if_needed(user, new_hash, guess)
    values = new_session_values(user.id, client)
    if not _insert_session(values, user, new_hash):
        current = user_store.login_row(normalized)
        if _same_password(current, user) and current.has_factor:
            # A first factor was added while this login hashed: it goes on to the second
            # step, rather than outliving the revocation of password-only sessions.
            _second_step_if_needed(current, None, guess)
        # The password changed, or the account was disabled, while this login hashed: it
        # checked a password that is no longer the user's (DESIGN §5).
        security_event("login_failed", user_id=str(user.id), reason="credentials_changed")
        raise InvalidCredentials()
    guess.succeeded()
    session = Session(**values)  # not added to the ORM session: it is written already
    caller = Caller.from_row(user)
    return AuthResult(caller, issue_pair(caller, session, fresh=True))


def _second_step_if_needed(user: Any, new_hash: str | None, guess: Reservation) -> None:
    """After the right password: a user with a factor (or whose role needs one) goes on at
    /login/mfa (or enrolment) with the mfa_token that ``mfa.second_step`` raises. A wrong
    password never gets here: no hint that MFA exists."""
    required_roles = runtime().settings.mfa.required_roles
    needs_factor = not user.has_factor and bool(required_roles & set(user.roles or []))
    if not (user.has_factor or needs_factor):
        return
    if new_hash is not None:
        with write_transaction():
            user_store.upgrade_password_hash(user.id, user.password_version, new_hash)
    guess.succeeded()
    mfa.second_step(user, enrol=needs_factor)


def _same_password(current: Any, checked: Any) -> bool:
    return (
        current is not None
        and current.id == checked.id
        and current.password_version == checked.password_version
        and current.disabled_at is None
    )


def _insert_session(values: dict[str, Any], user: Any, new_hash: str | None) -> bool:
    """Create a password-only login's session, and its audit event, only if the password it
    verified is still the user's, no factor was added since the login read the account, and
    the user is active; with ``new_hash`` (outdated parameters), upgrade the hash in the same
    transaction."""
    fields = {"user_id": str(user.id), "session_id": str(values["id"]), "amr": ["pwd"]}
    if new_hash is None:
        row, line = audit.prepared("login", **fields)
        if not session_store.insert_login(values, user.password_version, user.factor_version, row):
            return False
        audit.logged("login", line)
        return True
    with write_transaction():
        if not user_store.upgrade_password_hash(
            user.id, user.password_version, new_hash, user.factor_version
        ):
            return False
        if not session_store.insert_if_credentials_current(
            values, user.password_version, user.factor_version
        ):
            return False
        security_event("login", **fields)
    return True


def change_password(context: AccessContext, current_password: str, new_password: str) -> None:
    """A new password; every other session of the user is revoked. Written only if the password
    verified is still the user's and this session still live when the change commits (another
    change, a reset, a disable or a logout that landed meanwhile wins)."""
    rt = runtime()
    user = check_current_password(
        context.user.id,
        current_password,
        scope=PASSWORD_CHANGE_GUESSES,
        event="password_change_failed",
    )
    checked = rt.password_policy.check(new_password, username=user.username)
    new_hash = rt.hasher.hash(checked)
    with write_transaction():
        if not user_store.change_password_if_current(
            user.id, user.password_version, new_hash, context.session_id
        ):
            security_event(
                "password_change_failed", user_id=str(user.id), reason="superseded", alone=True
            )
            raise TokenRevoked("The password or the session changed meanwhile; log in again.")
        count = session_store.revoke(
            user_id=user.id, except_session_id=context.session_id, reason="password_changed"
        )
        # A reset link mailed before the change would undo it (DESIGN §9).
        email_service.void_for_new_password(user.id)
        email_service.notify_password_changed(user.id, how="changed")
        security_event("password_changed", user_id=str(user.id), sessions_revoked=count)
