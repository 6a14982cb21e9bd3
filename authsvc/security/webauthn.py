"""WebAuthn ceremonies (DESIGN §10): thin wrappers over the ``webauthn`` library, the only
module that imports it.

Options go out as WebAuthn's own JSON (``PublicKeyCredentialCreationOptionsJSON`` /
``...RequestOptionsJSON``, what ``webauthn.options_to_json`` gives); credentials come in as the
browser's ``credential.toJSON()``. Every failure of a credential, whatever the library (or the
bytes it was given) raised, is one ``CeremonyFailed`` with a short reason for the log: never
the credential, never the library's message.
"""

from __future__ import annotations

import binascii
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url, options_to_json_dict
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

CHALLENGE_BYTES = 32
TIMEOUT_MS = 5 * 60 * 1000  # the challenge's own lifetime
SINGLE_DEVICE, MULTI_DEVICE = "single_device", "multi_device"
_TRANSPORTS = frozenset(transport.value for transport in AuthenticatorTransport)
# What a malformed credential can make the library (or its base64 and CBOR decoders) raise.
_MALFORMED = (
    WebAuthnException,
    InvalidSignature,
    UnsupportedAlgorithm,
    binascii.Error,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    RecursionError,  # JSON nested a thousand levels deep in clientDataJSON
)
# WebAuthn's bound on a credential id (the authenticator data spends two bytes on its length).
MAX_CREDENTIAL_ID_BYTES = 1023


class CeremonyFailed(Exception):
    """The credential does not prove what it must; ``reason`` is for the security log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class StoredCredential:
    """A passkey as the options name it: its id (base64url) and the transports it reported."""

    credential_id: str
    transports: Sequence[str] | None


@dataclass(frozen=True)
class NewPasskey:
    credential_id: str  # base64url, no padding
    public_key: bytes  # COSE_Key
    sign_count: int
    device_type: str  # single_device or multi_device (synced)
    transports: list[str]


@dataclass(frozen=True)
class Assertion:
    credential_id: str
    new_sign_count: int
    device_type: str
    user_verified: bool


def new_challenge() -> tuple[bytes, str]:
    """A fresh challenge and its base64url form (what clientDataJSON will carry back)."""
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    return challenge, bytes_to_base64url(challenge)


def registration_options(
    *,
    rp_id: str,
    rp_name: str,
    user_handle: bytes,
    user_name: str,
    challenge: bytes,
    exclude: Sequence[StoredCredential],
) -> dict[str, Any]:
    """PublicKeyCredentialCreationOptionsJSON: a discoverable credential, user verification
    required, none of the user's existing passkeys again."""
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_name,
        user_id=user_handle,
        user_name=user_name,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=_descriptors(exclude),
    )
    return options_to_json_dict(options)


def authentication_options(
    *, rp_id: str, challenge: bytes, allow: Sequence[StoredCredential]
) -> dict[str, Any]:
    """PublicKeyCredentialRequestOptionsJSON, user verification required; ``allow`` empty for
    a discoverable (passwordless) login."""
    options = generate_authentication_options(
        rp_id=rp_id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        allow_credentials=_descriptors(allow),
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return options_to_json_dict(options)


def _descriptors(credentials: Sequence[StoredCredential]) -> list[PublicKeyCredentialDescriptor]:
    return [
        PublicKeyCredentialDescriptor(
            id=base64url_to_bytes(item.credential_id),
            transports=[
                AuthenticatorTransport(value)
                for value in item.transports or ()
                if value in _TRANSPORTS
            ]
            or None,
        )
        for item in credentials
    ]


def challenge_of(credential: dict[str, Any]) -> str:
    """The challenge (base64url, normalised) in the credential's clientDataJSON: which stored
    challenge this answers. CeremonyFailed if it cannot be read."""
    try:
        client_data = json.loads(base64url_to_bytes(credential["response"]["clientDataJSON"]))
        return bytes_to_base64url(base64url_to_bytes(client_data["challenge"]))
    except (*_MALFORMED, json.JSONDecodeError, UnicodeDecodeError):
        raise CeremonyFailed("malformed_client_data") from None


def credential_id_of(credential: dict[str, Any]) -> str:
    """The credential id (base64url, normalised, as stored)."""
    try:
        return bytes_to_base64url(base64url_to_bytes(credential["rawId"]))
    except _MALFORMED:
        raise CeremonyFailed("malformed_credential_id") from None


def user_handle_of(credential: dict[str, Any]) -> bytes | None:
    """The user handle an assertion of a discoverable credential names, if any."""
    handle = credential.get("response", {}).get("userHandle")
    if not handle:
        return None
    try:
        return base64url_to_bytes(handle)
    except _MALFORMED:
        raise CeremonyFailed("malformed_user_handle") from None


def verify_registration(
    credential: dict[str, Any], *, challenge: bytes, rp_id: str, origins: Sequence[str]
) -> NewPasskey:
    """Check a registration (type, challenge, origin, RP id hash, user presence and
    verification, attestation format "none" or a verifiable one); the new passkey."""
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=list(origins),
            require_user_verification=True,
        )
    except _MALFORMED:
        raise CeremonyFailed("registration_not_verified") from None
    # The library checks id == rawId only; the id the authenticator data names (what is kept,
    # and what later assertions are looked up by) must be that one too, and of a sane size.
    if verified.credential_id != base64url_to_bytes(credential["rawId"]) or (
        len(verified.credential_id) > MAX_CREDENTIAL_ID_BYTES
    ):
        raise CeremonyFailed("credential_id_mismatch")
    transports = credential.get("response", {}).get("transports") or []
    return NewPasskey(
        credential_id=bytes_to_base64url(verified.credential_id),
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        device_type=verified.credential_device_type.value,
        transports=sorted({item for item in transports if item in _TRANSPORTS}),
    )


def verify_assertion(
    credential: dict[str, Any],
    *,
    challenge: bytes,
    rp_id: str,
    origins: Sequence[str],
    public_key: bytes,
    sign_count: int,
) -> Assertion:
    """Check an assertion (type, challenge, origin, RP id hash, user presence and verification,
    the signature, a sign counter that went up when either counter is non-zero)."""
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=list(origins),
            credential_public_key=public_key,
            credential_current_sign_count=sign_count,
            require_user_verification=True,
        )
    except _MALFORMED:
        raise CeremonyFailed("assertion_not_verified") from None
    return Assertion(
        credential_id=bytes_to_base64url(verified.credential_id),
        new_sign_count=verified.new_sign_count,
        device_type=verified.credential_device_type.value,
        user_verified=verified.user_verified,
    )


def challenge_bytes(challenge: str) -> bytes:
    """The bytes of a base64url challenge (as ``challenge_of`` gave it)."""
    return base64url_to_bytes(challenge)
