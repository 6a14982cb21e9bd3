"""The secrets of mailed links (DESIGN §9): one-time tokens, kept only as an HMAC, and the
sealing of an outbox message's context (which holds the link) while it waits to be sent.

Both keys are derived (HKDF-SHA256) from AUTHSVC_SECRET_KEY, each for its one use. A database
dump therefore holds no usable token: the HMAC needs the secret, and so does a queued link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import uuid
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TOKEN_BYTES = 32
# base64url of 32 bytes without padding; anything else is not a token of ours.
TOKEN_LENGTH = 43
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _derive(secret_key: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        secret_key.encode()
    )


class MailSecrets:
    """One app's token digests and outbox sealing (``Runtime.mail_secrets``)."""

    def __init__(self, secret_key: str) -> None:
        self._digest_key = _derive(secret_key, b"authsvc one-time token digest v1")
        self._aead = AESGCM(_derive(secret_key, b"authsvc outbox payload v1"))

    def new_token(self) -> tuple[str, str]:
        """A fresh token for a link, and the digest to store instead of it."""
        token = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()
        return token, self.digest(token)

    def digest(self, token: str) -> str:
        """The stored form of ``token``: HMAC-SHA256 under the derived key, hex."""
        return hmac.new(self._digest_key, token.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def well_formed(token: str) -> bool:
        return len(token) == TOKEN_LENGTH and set(token) <= _ALPHABET

    def seal(self, context: dict[str, Any], message_id: uuid.UUID) -> bytes:
        """AES-256-GCM with the message id bound in (a sealed context moved to another row
        does not open)."""
        nonce = os.urandom(12)
        plain = json.dumps(context, separators=(",", ":")).encode()
        return nonce + self._aead.encrypt(nonce, plain, message_id.bytes)

    def open(self, blob: bytes, message_id: uuid.UUID) -> dict[str, Any] | None:
        """The context, or None when it does not open (another secret, another row)."""
        try:
            plain = self._aead.decrypt(blob[:12], blob[12:], message_id.bytes)
        except (InvalidTag, ValueError):
            return None
        return json.loads(plain)  # type: ignore[no-any-return]
