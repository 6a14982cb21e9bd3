"""TOTP codes (RFC 6238 with pyotp: SHA-1, 6 digits, 30 s steps), the enrolment QR code
(segno), recovery codes, and the sealing of TOTP secrets at rest (DESIGN §10).

A code is judged by the time step it belongs to (``matching_step``): the caller stores the
last step accepted and refuses any step not after it, so a code is never accepted twice, not
even within its own 30 seconds (the replay Supabase and Kratos allow).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
import uuid

import pyotp
import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DIGITS = 6
PERIOD = 30
# Steps either side of now that still count: one (a clock 30 s off, a code typed as it turned).
DRIFT_STEPS = 1
SECRET_BYTES = 20  # 160 bits, RFC 4226's recommendation for HMAC-SHA-1
RECOVERY_CODE_COUNT = 10
# Ten characters of Crockford-like base32 (50 bits), shown as two groups of five.
_RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_RECOVERY_LENGTH = 10


def new_secret() -> str:
    """A fresh shared secret, base32 as authenticator apps take it."""
    return pyotp.random_base32(length=32)  # 32 base32 characters = 160 bits


def current_step(now: float | None = None) -> int:
    return int((clock() if now is None else now) // PERIOD)


# The time source of current_step; a test that needs codes of later steps moves it forward.
clock = time.time


def code_at(secret: str, step: int) -> str:
    """The code of ``step`` (what an authenticator app shows during it)."""
    return _totp(secret).generate_otp(step)


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step ``code`` belongs to, within one step of now; None if none matches.
    Every candidate is computed and compared in constant time, whichever matches."""
    normalized = code.replace(" ", "")
    if len(normalized) != DIGITS or not normalized.isascii() or not normalized.isdigit():
        return None
    totp = _totp(secret)
    step = current_step(now)
    found = None
    for candidate in range(step - DRIFT_STEPS, step + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(candidate), normalized):
            found = candidate
    return found


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The ``otpauth://totp/...`` URI of Google's Key URI format, which every authenticator
    app reads (from the QR code)."""
    return _totp(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """Inline SVG markup of the URI's QR code (no XML declaration: it goes straight into a page)."""
    return segno.make(uri, error="m").svg_inline(scale=4, title="TOTP enrolment QR code")


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD, digest=hashlib.sha1)


def new_recovery_codes() -> list[str]:
    """A fresh set of recovery codes, as shown once to the user: ``xxxxx-xxxxx``."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def normalize_recovery_code(code: str) -> str | None:
    """A recovery code as typed (any case, with or without the dash or spaces), in the form
    it is hashed in; None if it cannot be one."""
    compact = code.replace("-", "").replace(" ", "").lower()
    if len(compact) != _RECOVERY_LENGTH or not set(compact) <= set(_RECOVERY_ALPHABET):
        return None
    return compact


def _derive(secret_key: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        secret_key.encode()
    )


class FactorSecrets:
    """One app's sealing of TOTP secrets and digest of recovery codes
    (``Runtime.factor_secrets``). Both keys are derived from AUTHSVC_SECRET_KEY, each for its
    own use: a database dump holds neither a usable secret nor a usable code."""

    def __init__(self, secret_key: str) -> None:
        self._aead = AESGCM(_derive(secret_key, b"authsvc totp secret v1"))
        self._code_key = _derive(secret_key, b"authsvc recovery code digest v1")

    def seal(self, secret: str, factor_id: uuid.UUID) -> bytes:
        """AES-256-GCM, the factor's id bound in (a sealed secret moved to another factor's row
        does not open)."""
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, secret.encode(), factor_id.bytes)

    def open(self, blob: bytes, factor_id: uuid.UUID) -> str | None:
        try:
            return self._aead.decrypt(blob[:12], blob[12:], factor_id.bytes).decode()
        except (InvalidTag, ValueError):
            return None

    def new_recovery_codes(self, user_id: uuid.UUID) -> tuple[list[str], list[str]]:
        """A fresh set of the user's recovery codes as shown once, and their digests as kept."""
        codes = new_recovery_codes()
        digests = []
        for code in codes:
            normalized = normalize_recovery_code(code)
            assert normalized is not None
            digests.append(self.code_digest(user_id, normalized))
        return codes, digests

    def code_digest(self, user_id: uuid.UUID, normalized_code: str) -> str:
        """HMAC-SHA256 of a normalised recovery code, bound to its user, hex."""
        message = user_id.bytes + normalized_code.encode()
        return hmac.new(self._code_key, message, hashlib.sha256).hexdigest()
