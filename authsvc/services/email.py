"""E-mail verification, password reset and e-mail change (DESIGN §9).

Every mailed link carries a one-time token: 32 random bytes of which only an HMAC is stored,
bound to one purpose, spent by one conditional UPDATE (``store.one_time_tokens.consume``),
voided by a newer token of its purpose. The message is queued in the outbox in the same
transaction as its token; the sender delivers it after the commit.

The endpoints a stranger can call with an address (the unauthenticated resend, the forgotten
password) answer alike whether or not the address exists; at most one mail per address and
purpose leaves per AUTHSVC_EMAIL_COOLDOWN, refused alike too.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from ..audit import security_event
from ..errors import (
    EmailAlreadyVerified,
    EmailTaken,
    FeatureDisabled,
    InvalidLinkToken,
    InvalidRequest,
    NoEmail,
    TokenRevoked,
)
from ..mail.sender import queue_message
from ..models import AccessContext, User, utcnow
from ..runtime import runtime
from ..security import emails
from ..store import one_time_tokens as token_store
from ..store import outbox as outbox_store
from ..store import sessions as session_store
from ..store import users as user_store
from ..store.database import write_transaction
from .reauth import check_current_password

VERIFY_EMAIL, RESET_PASSWORD, CHANGE_EMAIL = "verify_email", "reset_password", "change_email"
# A stranger's request for a mail, queued as an outbox row "request:<purpose>" and resolved by
# the sender (resolve_request); it is worth resolving for an hour.
REQUEST_PREFIX = "request:"
REQUEST_LIFETIME = timedelta(hours=1)
_REQUESTED = {
    RESET_PASSWORD: "password_reset_requested",
    VERIFY_EMAIL: "email_verification_requested",
}
_MAILED = {RESET_PASSWORD: "password_reset_mailed", VERIFY_EMAIL: "email_verification_sent"}
# The {action} of AUTHSVC_EMAIL_LINK_URL: the built-in page POSTs "verify" links to
# /email/verify and "reset" links to /password/reset.
_ACTIONS = {VERIFY_EMAIL: "verify", CHANGE_EMAIL: "verify", RESET_PASSWORD: "reset"}
# Notices carry no token; they are worth sending for a day.
NOTICE_LIFETIME = timedelta(days=1)
# Wrong current passwords at /email/change, per user (its own budget, as for /password).
EMAIL_CHANGE_GUESSES = "change-email"


def _ttl(purpose: str) -> int:
    settings = runtime().settings.email
    return {
        VERIFY_EMAIL: settings.verification_ttl,
        CHANGE_EMAIL: settings.change_ttl,
        RESET_PASSWORD: settings.reset_ttl,
    }[purpose]


def _lifetime(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = max(1, seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _cooldown(purpose: str, email_key: str) -> None:
    """At most one mail of ``purpose`` to the address per cooldown: 429 with Retry-After
    otherwise, taken before anything is looked up (so it answers alike for every address).
    Its own counters: on even with AUTHSVC_RATELIMIT_ENABLED=false (an edge that rate-limits
    requests does not stop one victim being sent a mail a second)."""
    rt = runtime()
    seconds = rt.settings.email.cooldown
    if seconds:
        rt.mail_cooldowns.reserve(f"mail-{purpose}", email_key, f"1/{seconds}second")


def _issue(user: User, purpose: str, address: str) -> None:
    """A new token of ``purpose`` for ``user`` (voiding the older ones) and its mail to
    ``address``, in the caller's transaction."""
    rt = runtime()
    now = utcnow()
    ttl = _ttl(purpose)
    token, digest = rt.mail_secrets.new_token()
    # The user's row is locked first (PostgreSQL; SQLite's write lock is taken already), so
    # two requests at once cannot both void the older tokens and leave two live ones.
    user_store.lock(user.id)
    token_store.void(user.id, [purpose], "superseded", now)
    token_store.add(user.id, purpose, digest, address, now, now + timedelta(seconds=ttl))
    link = rt.settings.email.link_url.format(action=_ACTIONS[purpose], token=token)
    context = {
        "username": user.username,
        "email": address,
        "link": link,
        "expires_in": _lifetime(ttl),
        "issuer": rt.settings.issuer,
    }
    queue_message(
        rt.mail_secrets,
        emails.deliverable(address),
        purpose,
        context,
        now + timedelta(seconds=ttl),
    )


def _notify(user: User, template: str, address: str, **context: str) -> None:
    rt = runtime()
    queue_message(
        rt.mail_secrets,
        emails.deliverable(address),
        template,
        {"username": user.username, "email": address, "issuer": rt.settings.issuer, **context},
        utcnow() + NOTICE_LIFETIME,
    )


def issue_signup_verification(user: User) -> None:
    """Signup's verification mail, in signup's transaction (unless verification is off)."""
    if runtime().settings.email.verification != "off" and user.email is not None:
        _issue(user, VERIFY_EMAIL, user.email)


def void_for_new_password(user_id: uuid.UUID) -> None:
    """A password change, reset or disable (in its transaction): the reset links, and the
    pending address changes, which whoever knew the old password may have asked for, die with
    it (an attacker's change confirmed after the owner's reset would take the account back)."""
    token_store.void(user_id, [RESET_PASSWORD, CHANGE_EMAIL], "password_changed", utcnow())


def notify_password_changed(user_id: uuid.UUID, how: str) -> None:
    """The "password changed" notice, in the change's transaction (if the user has an address)."""
    notify(user_id, "password_changed", how=how)


def notify(user_id: uuid.UUID, template: str, **context: str) -> None:
    """A security notice (``template``) to the user's address, in the caller's transaction; no
    mail if the user has no address."""
    user = user_store.get(user_id)
    if user is not None and user.email is not None:
        _notify(user, template, user.email, **context)


def request_verification(email: str | None, caller: AccessContext | None) -> None:
    """Send (again) the verification mail: to the caller's address, or to ``email`` if an
    unverified account holds it (answering alike either way)."""
    rt = runtime()
    if rt.settings.email.verification == "off":
        raise FeatureDisabled("E-mail verification is off here.")
    if caller is not None and email is None:
        user = user_store.get(caller.user.id)
        if user is None:
            raise TokenRevoked()
        if user.email is None or user.email_key is None:
            raise NoEmail()
        if user.email_verified_at is not None:
            raise EmailAlreadyVerified()
        _cooldown(VERIFY_EMAIL, user.email_key)
    else:
        if email is None:
            raise InvalidRequest("Give the e-mail address, or send an access token.")
        parsed = emails.parse(email)
        _cooldown(VERIFY_EMAIL, parsed.key)
        _queue_request(VERIFY_EMAIL, parsed)
        return
    with write_transaction():
        _issue(user, VERIFY_EMAIL, user.email)  # type: ignore[arg-type]
        security_event("email_verification_sent", user_id=str(user.id))


def forgot_password(email: str) -> None:
    """Mail a reset link if an active account holds ``email``; the same answer if none does."""
    parsed = emails.parse(email)
    _cooldown(RESET_PASSWORD, parsed.key)
    _queue_request(RESET_PASSWORD, parsed)


def _queue_request(purpose: str, address: emails.EmailAddress) -> None:
    """A stranger's request for a mail to ``address``: written as it is, one outbox row, and
    answered. Whether an account holds the address is looked up later by the sender
    (``resolve_request``), so a known and an unknown address cost the request the same work
    and the same time: nothing in the answer can tell them apart."""
    rt = runtime()
    with write_transaction():
        queue_message(
            rt.mail_secrets,
            address.address,
            f"{REQUEST_PREFIX}{purpose}",
            {"email_key": address.key},
            utcnow() + REQUEST_LIFETIME,
        )
        security_event(_REQUESTED[purpose])


def resolve_request(
    message_id: uuid.UUID, claim_id: uuid.UUID, template: str, context: dict[str, Any]
) -> None:
    """The outbox sender's half of ``_queue_request``: in one transaction, the request is
    marked done (if the sender still holds its claim) and, if an account it applies to holds
    the address, the token is made and its mail queued."""
    purpose = template.removeprefix(REQUEST_PREFIX)
    with write_transaction():
        if not outbox_store.finish_request(message_id, claim_id, utcnow()):
            return  # another sender took it over
        user = user_store.with_email(context["email_key"])
        if user is None or not user.is_active or user.email is None:
            return
        if purpose == VERIFY_EMAIL and user.email_verified_at is not None:
            return
        if purpose not in (VERIFY_EMAIL, RESET_PASSWORD):
            return
        _issue(user, purpose, user.email)
        security_event(_MAILED[purpose], user_id=str(user.id))


def _even_out(purpose: str, user_id: uuid.UUID) -> None:
    """The unknown address's path does the known one's work, with nothing to keep: the same
    token and sealing arithmetic, the same statements in one write transaction (matching and
    inserting no row), so the two answer in about the same time."""
    rt = runtime()
    token, _digest = rt.mail_secrets.new_token()
    rt.mail_secrets.seal({"link": token}, uuid.uuid4())
    rt.settings.email.link_url.format(action=_ACTIONS[purpose], token=token)
    with write_transaction():
        token_store.void(uuid.uuid4(), [purpose], "superseded", utcnow())
        token_store.add_nothing()
        outbox_store.add_nothing()
        security_event("email_change_requested", user_id=str(user_id), outcome="address_taken")


def _live_token(token: str, purposes: list[str], now: datetime) -> tuple[str, Any]:
    """The token's digest and its row (id, user_id, purpose, email, expires_at), if live."""
    secrets = runtime().mail_secrets
    if not secrets.well_formed(token):
        raise InvalidLinkToken()
    digest = secrets.digest(token)
    row = token_store.live(digest, purposes, now)
    if row is None:
        raise InvalidLinkToken()
    return digest, row


def reset_password(token: str, new_password: str) -> int:
    """A new password from a reset link: every session revoked, the address verified (the
    link reached it), outstanding reset links voided, a notice mailed. The sessions revoked."""
    rt = runtime()
    now = utcnow()
    digest, row = _live_token(token, [RESET_PASSWORD], now)
    user = user_store.get(row.user_id)
    if user is None or not user.is_active:
        raise InvalidLinkToken()
    # Checked before the token is spent: a weak password leaves the link usable.
    new_hash = rt.hasher.hash(rt.password_policy.check(new_password, username=user.username))
    with write_transaction():
        if token_store.consume(digest, [RESET_PASSWORD], utcnow()) is None:
            raise InvalidLinkToken()  # spent by a parallel use meanwhile
        user_store.set_password_hash(user.id, new_hash)
        if row.email is not None:
            user_store.mark_email_verified(user.id, row.email, now)
        void_for_new_password(user.id)
        count = session_store.revoke(user_id=user.id, reason="password_reset")
        notify_password_changed(user.id, how="reset with a link we mailed")
        security_event("password_reset", user_id=str(user.id), via="email", sessions_revoked=count)
    return count


def verify_email(token: str) -> User:
    """Spend a verification or change link: the address it names becomes the user's, verified."""
    now = utcnow()
    digest, _row = _live_token(token, [VERIFY_EMAIL, CHANGE_EMAIL], now)
    try:
        with write_transaction():
            row = token_store.consume(digest, [VERIFY_EMAIL, CHANGE_EMAIL], now)
            user = user_store.get(row.user_id) if row is not None else None
            if row is None or user is None or not user.is_active:
                raise InvalidLinkToken()
            if row.purpose == VERIFY_EMAIL:
                if not user_store.mark_email_verified(user.id, row.email, now):
                    raise InvalidLinkToken("The address changed since this link was sent.")
            else:
                _apply_change(user, row.email, now)
            session_store.user_changed(user.id)
            security_event(
                "email_verified" if row.purpose == VERIFY_EMAIL else "email_changed",
                user_id=str(user.id),
            )
    except IntegrityError:
        raise EmailTaken() from None
    refreshed = user_store.get(user.id)
    assert refreshed is not None
    return refreshed


def _apply_change(user: User, new_email: str, now: datetime) -> None:
    old_email = user.email
    user_store.change_email(user.id, new_email, emails.key_of(new_email), now)
    # Links mailed to the old address (or for an older change) no longer apply.
    token_store.void(user.id, [VERIFY_EMAIL, CHANGE_EMAIL, RESET_PASSWORD], "email_changed", now)
    if old_email is not None:
        _notify(user, "email_changed", old_email, new_email=new_email)


def change_email(context: AccessContext, new_email: str, current_password: str) -> None:
    """Mail a confirmation link to ``new_email``; the address changes when it is followed.
    An address another account holds gets nothing (the answer is the same)."""
    row = check_current_password(
        context.user.id, current_password, scope=EMAIL_CHANGE_GUESSES, event="email_change_failed"
    )
    parsed = emails.parse(new_email)
    user = user_store.get(row.id)
    if user is None:
        raise TokenRevoked()
    if user.email_key == parsed.key:
        raise InvalidRequest("That is already the address of this account.")
    _cooldown(CHANGE_EMAIL, parsed.key)
    holder = user_store.with_email(parsed.key)
    if holder is not None:
        _even_out(CHANGE_EMAIL, user.id)
        return
    with write_transaction():
        _issue(user, CHANGE_EMAIL, parsed.address)
        security_event("email_change_requested", user_id=str(user.id))
