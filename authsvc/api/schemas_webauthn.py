"""pydantic models of the passkey endpoints (DESIGN §10). The wire shapes are WebAuthn's own
JSON: a credential is the browser's ``credential.toJSON()``, whose members WebAuthn names (and
may add to), so its models are bounded but let unknown members through; the options are what
``webauthn.options_to_json`` gives (documented here, not built from these models)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .schemas import MfaLoginBase, StrictModel

_MAX_FIELD = 1024
# base64url members of a credential: clientDataJSON, authenticatorData and signature are
# small; an attestation object with a certificate chain is a few KiB. The body limit (64 KiB)
# bounds them all together.
_MAX_ID = 1400
_MAX_SMALL = 8192
_MAX_ATTESTATION = 48 * 1024


class _WebAuthnJson(BaseModel):
    # Types checked strictly; members WebAuthn may add later are kept, not refused.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class CredentialResponse(_WebAuthnJson):
    """AuthenticatorAttestationResponseJSON (registration) or
    AuthenticatorAssertionResponseJSON (login)."""

    clientDataJSON: str = Field(max_length=_MAX_SMALL)
    attestationObject: str | None = Field(default=None, max_length=_MAX_ATTESTATION)
    transports: list[str] | None = Field(default=None, max_length=16)
    authenticatorData: str | None = Field(default=None, max_length=_MAX_SMALL)
    signature: str | None = Field(default=None, max_length=_MAX_SMALL)
    userHandle: str | None = Field(default=None, max_length=_MAX_FIELD)


class PasskeyCredential(_WebAuthnJson):
    """A ``PublicKeyCredential`` as its ``toJSON()`` gives it."""

    id: str = Field(max_length=_MAX_ID)
    rawId: str = Field(max_length=_MAX_ID)
    type: Literal["public-key"]
    response: CredentialResponse
    authenticatorAttachment: str | None = Field(default=None, max_length=64)
    clientExtensionResults: dict[str, Any] = Field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The credential as JSON again, for the WebAuthn verification."""
        return self.model_dump(exclude_none=True)


class PasskeyOptionsRequest(StrictModel):
    """Adding a passkey needs the current password (a stolen access token must not add a
    factor), as enrolling an authenticator app does."""

    current_password: str = Field(max_length=_MAX_FIELD)


class LoginOptionsRequest(StrictModel):
    """The body of a passwordless login's options: empty (or absent)."""


class MfaOptionsRequest(StrictModel):
    mfa_token: str = Field(max_length=_MAX_FIELD)


class MfaLogin(MfaLoginBase):
    """The second step of a login: ``code`` (TOTP or recovery), or ``credential`` (a passkey's
    assertion for the options of /webauthn/mfa/options); exactly one."""

    credential: PasskeyCredential | None = None


class PasskeyOut(BaseModel):
    id: str
    type: Literal["passkey"] = "passkey"
    # A first factor: the account's recovery codes, shown this once.
    recovery_codes: list[str] | None = None


class CreationOptions(BaseModel):
    """PublicKeyCredentialCreationOptionsJSON: give it to
    ``PublicKeyCredential.parseCreationOptionsFromJSON`` and ``navigator.credentials.create``."""

    model_config = ConfigDict(extra="allow")

    rp: dict[str, str]
    user: dict[str, str]
    challenge: str
    pubKeyCredParams: list[dict[str, Any]]
    timeout: int
    excludeCredentials: list[dict[str, Any]]
    authenticatorSelection: dict[str, Any]
    attestation: str


class RequestOptions(BaseModel):
    """PublicKeyCredentialRequestOptionsJSON: give it to
    ``PublicKeyCredential.parseRequestOptionsFromJSON`` and ``navigator.credentials.get``."""

    model_config = ConfigDict(extra="allow")

    challenge: str
    timeout: int
    rpId: str
    allowCredentials: list[dict[str, Any]]
    userVerification: Literal["required"]
