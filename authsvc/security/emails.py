"""E-mail addresses (DESIGN §9): syntax checked by email-validator (no DNS), normalised, and
a comparison key for the unique index."""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from ..errors import InvalidEmail

MAX_LENGTH = 320


@dataclass(frozen=True)
class EmailAddress:
    address: str  # as email-validator normalises it: shown to the user and mailed to
    key: str  # the whole address case-folded, domain in IDNA: what uniqueness compares


def parse(address: str) -> EmailAddress:
    """The address normalised, or InvalidEmail (400) naming no library message."""
    if len(address) > MAX_LENGTH:
        raise InvalidEmail("The e-mail address is too long.")
    try:
        info = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        raise InvalidEmail() from None
    domain = info.ascii_domain or info.domain
    return EmailAddress(address=info.normalized, key=f"{info.local_part}@{domain}".casefold())


def deliverable(address: str) -> str:
    """The form to hand the mail server: an internationalised domain in IDNA (punycode), so a
    server without SMTPUTF8 still takes it; the local part as it is."""
    info = validate_email(address, check_deliverability=False)
    return info.ascii_email or info.normalized


def key_of(address: str) -> str:
    """The key of an address already stored (normalised when it was)."""
    return parse(address).key
