"""A software WebAuthn authenticator (and the browser around it) for API tests: real
registration and assertion responses, as ``credential.toJSON()`` gives them, without a browser.

One EC P-256 key (ES256) per credential; attestation format "none"; authenticator data with
the RP id hash, the flags (UP, UV, BE/BS for a synced passkey, AT at registration), the sign
counter and the attested credential data (CBOR by cbor2, which webauthn depends on). Every
knob a test needs to make a response wrong is a keyword: origin, rp_id, user_verified, the
counter step, the challenge.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

RP_ID = "auth.test"
ORIGIN = "https://auth.test"

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SoftAuthenticator:
    """One discoverable credential. ``synced``: backup eligible and backed up (a passkey in a
    password manager: ``swk``); else bound to this device (``hwk``). ``counting``: the sign
    counter goes up by one per assertion (False: always 0, as synced passkeys often do)."""

    def __init__(self, *, synced: bool = False, counting: bool = True) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.synced = synced
        self.counting = counting
        self.sign_count = 0
        self.user_handle: str | None = None

    @property
    def id(self) -> str:
        return b64url(self.credential_id)

    def _flags(self, user_verified: bool, extra: int = 0) -> int:
        flags = UP | extra | (UV if user_verified else 0)
        return flags | (BE | BS if self.synced else 0)

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str = ORIGIN,
        rp_id: str | None = None,
        user_verified: bool = True,
        challenge: str | None = None,
    ) -> dict[str, Any]:
        """navigator.credentials.create() with these creation options, as toJSON()."""
        self.user_handle = options["user"]["id"]
        client_data = _client_data("webauthn.create", challenge or options["challenge"], origin)
        attested = (
            bytes(16)  # AAGUID
            + struct.pack(">H", len(self.credential_id))
            + self.credential_id
            + self._cose_key()
        )
        auth_data = (
            hashlib.sha256((rp_id or options["rp"]["id"]).encode()).digest()
            + bytes([self._flags(user_verified, AT)])
            + struct.pack(">I", self.sign_count)
            + attested
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal", "hybrid"],
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {"credProps": {"rk": True}},
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str = ORIGIN,
        rp_id: str | None = None,
        user_verified: bool = True,
        counter_step: int | None = None,
        challenge: str | None = None,
    ) -> dict[str, Any]:
        """navigator.credentials.get() with these request options, as toJSON()."""
        step = counter_step if counter_step is not None else (1 if self.counting else 0)
        self.sign_count += step
        client_data = _client_data("webauthn.get", challenge or options["challenge"], origin)
        auth_data = (
            hashlib.sha256((rp_id or options["rpId"]).encode()).digest()
            + bytes([self._flags(user_verified)])
            + struct.pack(">I", self.sign_count)
        )
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = self.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        response = {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        if self.user_handle is not None:
            response["userHandle"] = self.user_handle
        return {
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "response": response,
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        }


def _client_data(kind: str, challenge: str, origin: str) -> bytes:
    return json.dumps(
        {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False},
        separators=(",", ":"),
    ).encode()
