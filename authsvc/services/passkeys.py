"""Passkeys (WebAuthn, DESIGN §10): registration, the passwordless login, and a passkey as the
second factor of a password login.

Each ceremony answers one challenge, kept only as a digest, single use, 5 minutes. A
registration or a passwordless login first spends its challenge (the one read from the
credential's clientDataJSON) in one conditional UPDATE, committed, so a failure anywhere after
leaves it spent; only then is the credential verified against it. A use of a passkey moves its
sign counter by one conditional UPDATE from the value it was verified against.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from ..audit import security_event
from ..errors import (
    EmailNotVerified,
    InvalidCode,
    InvalidCredentials,
    InvalidPasskeyCredential,
    MfaNotEnabled,
    TooManyPasskeys,
)
from ..models import AccessContext, AuthResult, Client, Session, utcnow
from ..runtime import runtime
from ..security import webauthn
from ..security.webauthn import CeremonyFailed, NewPasskey, StoredCredential
from ..store import challenges as challenge_store
from ..store import factors as factor_store
from ..store import passkeys as passkey_store
from ..store import sessions as session_store
from ..store import users as user_store
from ..store.database import write_transaction
from ..tokens.issue import issue_pair
from . import email as email_service
from .reauth import check_current_password, factor_added, require_step_up_to_add
from .sessions import new_session_values

REGISTER, LOGIN, SECOND_FACTOR = "webauthn_register", "webauthn_login", "webauthn_mfa"
CHALLENGE_TTL = timedelta(minutes=5)
MAX_PASSKEYS = 10
# Wrong current passwords share the budget of the other MFA changes (services/mfa.py).
PASSWORD_GUESSES = "mfa-password"  # noqa: S105 (a counter name)
# RFC 8176: a key bound to one device, or one that syncs (backup eligible).
AMR = {webauthn.SINGLE_DEVICE: "hwk", webauthn.MULTI_DEVICE: "swk"}


# --- registration -------------------------------------------------------------------------


def registration_options(context: AccessContext, current_password: str) -> dict[str, Any]:
    """PublicKeyCredentialCreationOptionsJSON for a new passkey of the caller. Needs the
    current password, so a stolen access token alone cannot add a factor (as TOTP)."""
    user = context.user
    require_step_up_to_add(context)
    row = check_current_password(
        user.id, current_password, scope=PASSWORD_GUESSES, event="mfa_change_failed"
    )
    existing = _stored(user.id)
    if len(existing) >= MAX_PASSKEYS:
        raise TooManyPasskeys()
    challenge, encoded = webauthn.new_challenge()
    _add_challenge(REGISTER, encoded, user_id=user.id, password_version=row.password_version)
    settings = runtime().settings.mfa
    return webauthn.registration_options(
        rp_id=settings.webauthn_rp_id,
        rp_name=settings.webauthn_rp_name,
        user_handle=user.id.bytes,
        user_name=user.username,
        challenge=challenge,
        exclude=existing,
    )


def register(
    context: AccessContext, credential: dict[str, Any]
) -> tuple[uuid.UUID, list[str] | None]:
    """Verify a new credential against its registration challenge and keep it: an active
    factor at once. A first factor logs out the user's other password-only sessions and comes
    with a set of recovery codes (returned, shown once): without them a lost passkey would
    lock its owner out, since removing a factor takes a code."""
    user_id = context.user.id
    settings = runtime().settings.mfa
    try:
        challenge, expected = _spend_challenge(credential, [REGISTER])
        if challenge.user_id != user_id:
            raise CeremonyFailed("challenge_of_another_user")
        passkey = webauthn.verify_registration(
            credential,
            challenge=expected,
            rp_id=settings.webauthn_rp_id,
            origins=settings.webauthn_origins,
        )
    except CeremonyFailed as failed:
        security_event("passkey_register_failed", user_id=str(user_id), reason=failed.reason)
        raise InvalidPasskeyCredential() from None
    factor_id, codes, _revoked = _keep(context, passkey)
    return factor_id, codes


def _keep(context: AccessContext, passkey: NewPasskey) -> tuple[uuid.UUID, list[str] | None, int]:
    """Store a verified passkey under the limit; the factor id, the recovery codes of a first
    factor, and how many password-only sessions that revoked."""
    now = utcnow()
    user_id = context.user.id
    try:
        with write_transaction():
            user_store.lock(user_id)  # parallel registrations: the limit holds
            if passkey_store.count(user_id) >= MAX_PASSKEYS:
                raise TooManyPasskeys()
            if passkey_store.exists(passkey.credential_id):
                raise InvalidPasskeyCredential("This passkey is registered already.")
            amr = AMR[passkey.device_type]
            first, revoked = factor_added(user_id, context.session_id, amr, now)
            factor_id = passkey_store.add(
                user_id,
                credential_id=passkey.credential_id,
                public_key=passkey.public_key,
                sign_count=passkey.sign_count,
                transports=passkey.transports,
                device_type=passkey.device_type,
                now=now,
            )
            codes = None
            if first:
                # Without codes a lost passkey would lock its owner out (removal takes one).
                codes, digests = runtime().factor_secrets.new_recovery_codes(user_id)
                factor_store.replace_recovery_codes(user_id, digests, now)
            email_service.notify(user_id, "mfa_changed", change="A passkey was added to")
            security_event(
                "mfa_enabled",
                user_id=str(user_id),
                factor_id=str(factor_id),
                factor_type="passkey",
                device_type=passkey.device_type,
                sessions_revoked=revoked,
            )
    except IntegrityError:
        # The same credential registered by another account at the same moment: the unique
        # index on factors.credential_id decided.
        raise InvalidPasskeyCredential("This passkey is registered already.") from None
    return factor_id, codes, revoked


# --- the passwordless login ---------------------------------------------------------------


def login_options() -> dict[str, Any]:
    """PublicKeyCredentialRequestOptionsJSON for a discoverable credential (nobody named)."""
    challenge, encoded = webauthn.new_challenge()
    _add_challenge(LOGIN, encoded)
    return webauthn.authentication_options(
        rp_id=runtime().settings.mfa.webauthn_rp_id, challenge=challenge, allow=[]
    )


def login(credential: dict[str, Any], client: Client) -> AuthResult:
    """A passkey alone: a new session at aal2 (user verification is required), ``amr``
    ``hwk`` or ``swk``. Every failure is the one 401 ``invalid_credentials``."""
    try:
        _challenge, expected = _spend_challenge(credential, [LOGIN])
        passkey, assertion = _verified_assertion(credential, expected)
    except CeremonyFailed as failed:
        raise _refused(failed.reason) from None
    if runtime().settings.email.verification == "required":
        # As /login, and only after the passkey proved who it is: an unverified address
        # logs in nowhere (the account may predate AUTHSVC_EMAIL_VERIFICATION=required).
        owner = user_store.get(passkey.user_id)
        if owner is not None and not owner.email_verified:
            security_event("login_refused", user_id=str(owner.id), reason="email_not_verified")
            raise EmailNotVerified()
    amr = AMR[assertion.device_type]
    values = new_session_values(passkey.user_id, client, amr=(amr,), aal="aal2")
    now = utcnow()
    with write_transaction():
        if not passkey_store.advance(passkey.id, passkey.sign_count, assertion.new_sign_count, now):
            raise _refused("sign_count_raced", passkey.user_id)
        if not session_store.insert_if_credentials_current(values, passkey.password_version):
            raise _refused("user_disabled", passkey.user_id)
        security_event(
            "login",
            user_id=str(passkey.user_id),
            session_id=str(values["id"]),
            amr=[amr],
            aal="aal2",
        )
    user = user_store.get(passkey.user_id)
    assert user is not None  # the session was inserted only for an active user
    session = Session(**values)  # written already: not added to the ORM session
    return AuthResult(user, issue_pair(user, session, fresh=True))


def _refused(reason: str, user_id: uuid.UUID | None = None) -> InvalidCredentials:
    security_event(
        "login_failed",
        method="passkey",
        reason=reason,
        user_id=str(user_id) if user_id else None,
        alone=True,  # also raised inside the login's transaction, which then rolls back
    )
    return InvalidCredentials("The passkey was not accepted.")


# --- a passkey as the second factor of a password login -----------------------------------


def second_factor_options(user_id: uuid.UUID) -> dict[str, Any]:
    """PublicKeyCredentialRequestOptionsJSON naming the user's passkeys, for the second step
    of their password login (the caller resolved the ``mfa_token`` to ``user_id``)."""
    allow = _stored(user_id)
    if not allow:
        raise MfaNotEnabled("This account has no passkey.")
    challenge, encoded = webauthn.new_challenge()
    _add_challenge(SECOND_FACTOR, encoded, user_id=user_id)
    return webauthn.authentication_options(
        rp_id=runtime().settings.mfa.webauthn_rp_id, challenge=challenge, allow=allow
    )


def second_factor_proof(
    user_id: uuid.UUID, credential: dict[str, Any]
) -> tuple[str, Callable[[datetime], None]]:
    """Verify an assertion of one of the user's passkeys (InvalidCode if it fails): its
    ``amr`` (``hwk``/``swk``) and ``take(now)``, to call in the login's write transaction,
    which spends the challenge and moves the sign counter, each by one conditional UPDATE,
    and raises InvalidCode if either was done first by someone else."""
    try:
        encoded = webauthn.challenge_of(credential)
        passkey, assertion = _verified_assertion(
            credential, webauthn.challenge_bytes(encoded), user_id=user_id
        )
    except CeremonyFailed as failed:
        security_event("login_failed", user_id=str(user_id), method="passkey", reason=failed.reason)
        raise InvalidCode("The passkey was not accepted.") from None
    digest = runtime().mail_secrets.digest(encoded)

    def take(now: datetime) -> None:
        challenge = challenge_store.consume(digest, [SECOND_FACTOR], now)
        if challenge is None or challenge.user_id != user_id:
            raise InvalidCode("The passkey's challenge is unknown, expired or used.")
        if not passkey_store.advance(passkey.id, passkey.sign_count, assertion.new_sign_count, now):
            raise InvalidCode("The passkey was not accepted.")

    return AMR[assertion.device_type], take


# --- shared -------------------------------------------------------------------------------


def _stored(user_id: uuid.UUID) -> list[StoredCredential]:
    return [
        StoredCredential(row.credential_id, row.transports)
        for row in passkey_store.descriptors(user_id)
    ]


def _add_challenge(
    kind: str,
    encoded: str,
    *,
    user_id: uuid.UUID | None = None,
    password_version: int | None = None,
) -> None:
    now = utcnow()
    digest = runtime().mail_secrets.digest(encoded)
    with write_transaction():
        challenge_store.add(
            kind,
            digest,
            now,
            now + CHALLENGE_TTL,
            user_id=user_id,
            password_version=password_version,
        )


def _spend_challenge(credential: dict[str, Any], kinds: Collection[str]) -> tuple[Any, bytes]:
    """Spend the live challenge the credential answers (committed at once): its row and its
    bytes, to verify the credential against. CeremonyFailed if there is none."""
    encoded = webauthn.challenge_of(credential)
    digest = runtime().mail_secrets.digest(encoded)
    with write_transaction():
        challenge = challenge_store.consume(digest, kinds, utcnow())
    if challenge is None:
        raise CeremonyFailed("unknown_challenge")
    return challenge, webauthn.challenge_bytes(encoded)


def _verified_assertion(
    credential: dict[str, Any], expected: bytes, *, user_id: uuid.UUID | None = None
) -> tuple[Any, webauthn.Assertion]:
    """The stored passkey the assertion names (of ``user_id``, if given) and the verified
    assertion; CeremonyFailed if unknown, of another user or a disabled one, or not valid."""
    passkey = passkey_store.by_credential_id(webauthn.credential_id_of(credential))
    if passkey is None:
        raise CeremonyFailed("unknown_credential")
    if user_id is not None and passkey.user_id != user_id:
        raise CeremonyFailed("credential_of_another_user")
    handle = webauthn.user_handle_of(credential)
    if handle is not None and handle != passkey.user_id.bytes:
        raise CeremonyFailed("user_handle_mismatch")
    if passkey.disabled_at is not None:
        raise CeremonyFailed("user_disabled")
    settings = runtime().settings.mfa
    assertion = webauthn.verify_assertion(
        credential,
        challenge=expected,
        rp_id=settings.webauthn_rp_id,
        origins=settings.webauthn_origins,
        public_key=passkey.public_key,
        sign_count=passkey.sign_count or 0,
    )
    return passkey, assertion
