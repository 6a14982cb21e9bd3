"""Second factors (DESIGN §10): TOTP enrolment and confirmation, recovery codes, the second
step of a login, and removing a factor.

Every code is checked twice over: first against the secret (a wrong code costs nothing but a
throttled guess), then taken by one conditional UPDATE in the transaction that acts on it (the
TOTP step moves forward, the recovery code is marked used), so a code is accepted once, also
by parallel requests, and a failure anywhere after leaves it unspent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from ..audit import security_event
from ..errors import (
    FactorExists,
    FactorRequired,
    InvalidCode,
    InvalidMfaToken,
    MfaEnrolmentRequired,
    MfaNotEnabled,
    MfaRequired,
    NotFound,
)
from ..models import AccessContext, AuthResult, Client, Session, utcnow
from ..runtime import runtime
from ..security import totp
from ..security.attempts import Reservation
from ..store import challenges as challenge_store
from ..store import factors as factor_store
from ..store import sessions as session_store
from ..store import users as user_store
from ..store.database import write_transaction
from ..tokens.issue import issue_pair
from . import email as email_service
from . import passkeys
from .reauth import check_current_password, factor_added, require_step_up_to_add
from .sessions import new_session_values

MFA_TOKEN_TTL = timedelta(minutes=5)
MFA_TOKEN_ATTEMPTS = 5
# A pending TOTP factor must be confirmed this soon after the secret was shown.
ENROLMENT_TTL = timedelta(minutes=10)
MFA_LOGIN, MFA_ENROL = "mfa_login", "mfa_enrol"
# Failure counters: wrong codes per user (every factor of theirs and the recovery codes share
# it, so two factors do not double an attacker's guesses), and wrong current passwords at the
# MFA endpoints per user.
CODE_GUESSES = "mfa-code"
PASSWORD_GUESSES = "mfa-password"  # noqa: S105 (a counter name)


@dataclass(frozen=True)
class TotpEnrolment:
    id: uuid.UUID
    secret: str
    otpauth_uri: str
    qr_svg: str


@dataclass(frozen=True)
class MfaStatus:
    factors: list[Any]  # rows: id, type, created_at, last_used_at
    recovery_codes_left: int


@dataclass(frozen=True)
class Confirmation:
    recovery_codes: list[str]
    login: AuthResult | None  # an enrolment made with an mfa_token also logs the user in


@dataclass(frozen=True)
class CodeProof:
    """A code that matched, not yet taken: ``take`` spends it in the caller's transaction."""

    amr: str  # otp (a TOTP code) or mfa (a recovery code), RFC 8176
    take: Callable[[datetime], None]
    recovery: bool


def status(context: AccessContext) -> MfaStatus:
    user_id = context.user.id
    return MfaStatus(
        factors=factor_store.confirmed(user_id),
        recovery_codes_left=factor_store.recovery_codes_left(user_id),
    )


# --- the second step of a login ---------------------------------------------------------


def second_step(user: Any, *, enrol: bool) -> NoReturn:
    """After the right password (``user`` is the login row): hand out the ``mfa_token`` that
    the login goes on with, bound to the password checked. ``enrol``: the user has no factor
    but a role that needs one, so the token can only enrol (AUTHSVC_MFA_REQUIRED_ROLES)."""
    rt = runtime()
    now = utcnow()
    token, digest = rt.mail_secrets.new_token()
    with write_transaction():
        challenge_store.add(
            MFA_ENROL if enrol else MFA_LOGIN,
            digest,
            now,
            now + MFA_TOKEN_TTL,
            user_id=user.id,
            password_version=user.password_version,
        )
        factors = [] if enrol else factor_store.confirmed(user.id)
        security_event("login_mfa_required", user_id=str(user.id), enrol=enrol)
    extra = {
        "mfa_token": token,
        "factors": [{"id": str(row.id), "type": row.type} for row in factors],
    }
    raise (MfaEnrolmentRequired if enrol else MfaRequired)(extra=extra)


def complete_login(
    mfa_token: str, client: Client, *, code: str | None, credential: dict[str, Any] | None
) -> AuthResult:
    """The second step: a TOTP or recovery code, or a passkey's assertion (for the options
    of /webauthn/mfa/options), with the ``mfa_token`` of the first; a new session at aal2."""
    challenge = _take_attempt(mfa_token, [MFA_LOGIN])
    user_id = challenge.user_id
    guess = _reserve_code_guess(user_id)
    if credential is not None:
        amr, take = passkeys.second_factor_proof(user_id, credential)
        proof = CodeProof(amr, _logged(take, user_id), recovery=False)
    else:
        assert code is not None
        proof = _code_proof(user_id, code, event="login_failed")
    values = new_session_values(user_id, client, amr=("pwd", proof.amr), aal="aal2")
    now = utcnow()
    with write_transaction():
        if not challenge_store.spend(challenge.id, now):
            raise InvalidMfaToken()  # a parallel second step used it first
        proof.take(now)
        _insert_session(values, challenge.password_version)
        if proof.recovery:
            _notify_recovery_code_used(user_id)
        _login_events(user_id, values, recovery=proof.recovery)
    guess.succeeded()
    return _logged_in(user_id, values)


def _reserve_code_guess(user_id: uuid.UUID) -> Reservation:
    """One unit of the user's wrong-code budget, taken before a code is checked (every factor
    and the recovery codes share it), given back by a success."""
    rt = runtime()
    return rt.code_guesses.reserve(CODE_GUESSES, str(user_id), rt.settings.mfa.ratelimit_code)


def mfa_token_user(mfa_token: str) -> uuid.UUID:
    """Whose second step an ``mfa_token`` is (to offer that user's passkeys); counts as one of
    its attempts, InvalidMfaToken if it is spent, expired or out of attempts."""
    return _take_attempt(mfa_token, [MFA_LOGIN]).user_id  # type: ignore[no-any-return]


def _logged(take: Callable[[datetime], None], user_id: uuid.UUID) -> Callable[[datetime], None]:
    """``take`` of a passkey's proof, its refusal logged (a challenge or counter used first)."""

    def logged(now: datetime) -> None:
        try:
            take(now)
        except InvalidCode:
            security_event("login_failed", user_id=str(user_id), reason="passkey_raced", alone=True)
            raise

    return logged


def _take_attempt(mfa_token: str, kinds: list[str]) -> Any:
    """Count one try of the token (committed before the code is looked at); its row."""
    rt = runtime()
    if not rt.mail_secrets.well_formed(mfa_token):
        raise InvalidMfaToken()
    digest = rt.mail_secrets.digest(mfa_token)
    with write_transaction():
        row = challenge_store.take_attempt(digest, kinds, utcnow(), MFA_TOKEN_ATTEMPTS)
    if row is None:
        raise InvalidMfaToken()
    return row


def _insert_session(values: dict[str, Any], password_version: int) -> None:
    if not session_store.insert_if_credentials_current(values, password_version):
        # The password changed, or the account was disabled, since the first step.
        raise InvalidMfaToken("The password changed or the account was disabled; log in again.")


def _login_events(user_id: uuid.UUID, values: dict[str, Any], *, recovery: bool) -> None:
    """In the login's transaction."""
    security_event(
        "login",
        user_id=str(user_id),
        session_id=str(values["id"]),
        amr=list(values["amr"]),
        aal="aal2",
    )
    if recovery:
        security_event("recovery_code_used", user_id=str(user_id))


def _logged_in(user_id: uuid.UUID, values: dict[str, Any]) -> AuthResult:
    user = user_store.get(user_id)
    assert user is not None  # the session was inserted only for an active user
    session = Session(**values)  # written already: not added to the ORM session
    return AuthResult(user, issue_pair(user, session, fresh=True))


# --- codes --------------------------------------------------------------------------------


def _code_proof(user_id: uuid.UUID, code: str, *, event: str) -> CodeProof:
    """The TOTP or recovery code ``code`` if it matches (not yet spent); InvalidCode if not."""
    rt = runtime()
    digits = code.replace(" ", "")
    if len(digits) == totp.DIGITS and digits.isascii() and digits.isdigit():
        row = factor_store.totp_row(user_id)
        secret = rt.factor_secrets.open(row.secret_encrypted, row.id) if row else None
        step = totp.matching_step(secret, digits) if secret else None
        if step is not None:
            factor_id = row.id

            def take_step(now: datetime) -> None:
                # An earlier use of this step (a replay) or a later one: refused, forever.
                if not factor_store.take_step(factor_id, step, now):
                    security_event(event, user_id=str(user_id), reason="replayed_step", alone=True)
                    raise InvalidCode()

            return CodeProof("otp", take_step, recovery=False)
    elif (normalized := totp.normalize_recovery_code(code)) is not None:
        digest = rt.factor_secrets.code_digest(user_id, normalized)

        def use_code(now: datetime) -> None:
            if not factor_store.use_recovery_code(user_id, digest, now):
                security_event(
                    event, user_id=str(user_id), reason="wrong_or_used_recovery_code", alone=True
                )
                raise InvalidCode()

        return CodeProof("mfa", use_code, recovery=True)
    security_event(event, user_id=str(user_id), reason="wrong_code")
    raise InvalidCode()


def check_code(user_id: uuid.UUID, code: str, *, event: str) -> tuple[Reservation, CodeProof]:
    """For another service's re-authentication (DELETE /me): one unit of the wrong-code
    budget, and the matching code to ``take`` in the caller's transaction (InvalidCode if
    none matches)."""
    guess = _reserve_code_guess(user_id)
    return guess, _code_proof(user_id, code, event=event)


def _notify_recovery_code_used(user_id: uuid.UUID) -> None:
    left = factor_store.recovery_codes_left(user_id)
    email_service.notify(user_id, "recovery_code_used", left=str(left))


# --- TOTP enrolment -----------------------------------------------------------------------


def enrol_totp(context: AccessContext, current_password: str) -> TotpEnrolment:
    """Start adding an authenticator app: a pending factor and its secret. Needs the current
    password, so a stolen access token alone cannot add a factor (supabase/auth #1615)."""
    require_step_up_to_add(context)
    check_current_password(
        context.user.id, current_password, scope=PASSWORD_GUESSES, event="mfa_change_failed"
    )
    return _start_totp(context.user.id, context.user.username)


def enrol_totp_with_token(mfa_token: str) -> TotpEnrolment:
    """The same for a user whose role needs a factor, with the enrol-only ``mfa_token`` their
    password step gave (each use is one of its attempts)."""
    challenge = _take_attempt(mfa_token, [MFA_ENROL])
    user = user_store.get(challenge.user_id)
    if user is None or not user.is_active:
        raise InvalidMfaToken()
    return _start_totp(user.id, user.username)


def _start_totp(user_id: uuid.UUID, account: str) -> TotpEnrolment:
    rt = runtime()
    if factor_store.totp_row(user_id) is not None:
        raise FactorExists()
    secret = totp.new_secret()
    factor_id = uuid.uuid4()
    with write_transaction():
        factor_store.delete_pending(user_id)  # an enrolment started again replaces the last
        factor_store.add_totp(
            factor_id, user_id, rt.factor_secrets.seal(secret, factor_id), utcnow()
        )
    uri = totp.provisioning_uri(secret, account, rt.settings.mfa.issuer_name)
    return TotpEnrolment(factor_id, secret, uri, totp.qr_svg(uri))


def confirm_totp(
    user_id: uuid.UUID,
    factor_id: uuid.UUID,
    code: str,
    *,
    session_id: uuid.UUID | None = None,
    enrol_token: str | None = None,
    client: Client | None = None,
) -> Confirmation:
    """Activate a pending TOTP factor with a code from the app; a new set of recovery codes.
    A first factor revokes the user's other aal1 sessions (they were only a password away).
    With ``enrol_token`` (enrol-only login), the user is logged in at aal2 as well."""
    rt = runtime()
    guess = _reserve_code_guess(user_id)
    now = utcnow()
    row = factor_store.totp_row(user_id, factor_id=factor_id)
    if row is None or row.confirmed_at is not None or row.created_at <= now - ENROLMENT_TTL:
        raise NotFound("No such enrolment, or it expired; start again.")
    secret = rt.factor_secrets.open(row.secret_encrypted, row.id)
    step = totp.matching_step(secret, code) if secret else None
    if step is None:
        security_event("mfa_confirm_failed", user_id=str(user_id), reason="wrong_code")
        raise InvalidCode()
    codes, digests = rt.factor_secrets.new_recovery_codes(user_id)
    values = None
    with write_transaction():
        user_store.lock(user_id)  # parallel confirmations of two enrolments: one app, not two
        if factor_store.totp_row(user_id) is not None:
            raise FactorExists()
        _first, revoked = factor_added(user_id, session_id, "otp", now)
        if not factor_store.confirm(factor_id, step, now, now - ENROLMENT_TTL):
            raise NotFound("No such enrolment, or it expired; start again.")
        factor_store.replace_recovery_codes(user_id, digests, now)
        if enrol_token is not None:
            values = _enrolled_login(user_id, enrol_token, client, now)
            _login_events(user_id, values, recovery=False)
        email_service.notify(user_id, "mfa_changed", change="An authenticator app was added to")
        security_event(
            "mfa_enabled",
            user_id=str(user_id),
            factor_id=str(factor_id),
            factor_type="totp",
            sessions_revoked=revoked,
        )
    guess.succeeded()
    login = _logged_in(user_id, values) if values is not None else None
    return Confirmation(codes, login)


def _enrolled_login(
    user_id: uuid.UUID, enrol_token: str, client: Client | None, now: datetime
) -> dict[str, Any]:
    """In the confirmation's transaction: spend the enrol-only token, open an aal2 session."""
    rt = runtime()
    digest = rt.mail_secrets.digest(enrol_token)
    challenge = challenge_store.consume(digest, [MFA_ENROL], now)
    if challenge is None or challenge.user_id != user_id:
        raise InvalidMfaToken()
    values = new_session_values(
        user_id, client or Client(None, None), amr=("pwd", "otp"), aal="aal2"
    )
    _insert_session(values, challenge.password_version)
    return values


def enrolling_user(enrol_token: str) -> uuid.UUID:
    """Whose enrolment an enrol-only ``mfa_token`` may confirm (a look: it is spent when the
    confirmation succeeds, and each look is one of its attempts)."""
    return _take_attempt(enrol_token, [MFA_ENROL]).user_id  # type: ignore[no-any-return]


# --- changing the factors of a logged-in user ---------------------------------------------


def remove_factor(
    context: AccessContext, factor_id: uuid.UUID, current_password: str, code: str
) -> None:
    """Remove a factor: the current password and a code (TOTP or recovery) both. Removing the
    last one also drops the recovery codes; a role that needs a factor keeps the last one."""
    user_id = context.user.id
    check_current_password(
        user_id, current_password, scope=PASSWORD_GUESSES, event="mfa_change_failed"
    )
    if not any(row.id == factor_id for row in factor_store.confirmed(user_id)):
        raise NotFound("No such factor.")
    rt = runtime()
    guess = _reserve_code_guess(user_id)
    proof = _code_proof(user_id, code, event="mfa_change_failed")
    now = utcnow()
    with write_transaction():
        user_store.lock(user_id)
        proof.take(now)
        if factor_store.delete_factor(user_id, factor_id) == 0:
            raise NotFound("No such factor.")
        if factor_store.count_confirmed(user_id) == 0:
            if rt.settings.mfa.required_roles & set(context.user.roles):
                raise FactorRequired()
            factor_store.delete_recovery_codes(user_id)
        email_service.notify(user_id, "mfa_changed", change="A second factor was removed from")
        security_event("mfa_disabled", user_id=str(user_id), factor_id=str(factor_id))
        if proof.recovery:
            security_event("recovery_code_used", user_id=str(user_id))
    guess.succeeded()


def regenerate_recovery_codes(
    context: AccessContext, current_password: str, code: str
) -> list[str]:
    """A new set of 10 recovery codes replacing the old (used or not); password and code."""
    user_id = context.user.id
    check_current_password(
        user_id, current_password, scope=PASSWORD_GUESSES, event="mfa_change_failed"
    )
    if factor_store.count_confirmed(user_id) == 0:
        raise MfaNotEnabled()
    rt = runtime()
    guess = _reserve_code_guess(user_id)
    proof = _code_proof(user_id, code, event="mfa_change_failed")
    codes, digests = rt.factor_secrets.new_recovery_codes(user_id)
    now = utcnow()
    with write_transaction():
        proof.take(now)
        factor_store.replace_recovery_codes(user_id, digests, now)
        email_service.notify(user_id, "mfa_changed", change="New recovery codes were made for")
        security_event("recovery_codes_regenerated", user_id=str(user_id))
    guess.succeeded()
    return codes
