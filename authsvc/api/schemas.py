"""pydantic models for request bodies and responses; /openapi.json is generated from them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from ..models import UserLike

# Generous structural bounds; the configured limits (password length, username rules) are
# checked by the services with their own error codes.
_MAX_FIELD = 1024
_MAX_TOKEN = 8192


class StrictModel(BaseModel):
    # Unknown fields and coerced types are client errors (400), never silently accepted.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Credentials(StrictModel):
    username: str = Field(max_length=_MAX_FIELD, examples=["alice@example.com"])
    password: str = Field(max_length=_MAX_FIELD, examples=["correct horse battery staple"])


class SignupRequest(StrictModel):
    username: str = Field(max_length=_MAX_FIELD, examples=["alice"])
    password: str = Field(max_length=_MAX_FIELD, examples=["correct horse battery staple"])
    # Optional; with AUTHSVC_EMAIL_VERIFICATION=required, required.
    email: str | None = Field(default=None, max_length=_MAX_FIELD, examples=["alice@example.com"])


class EmailRequest(StrictModel):
    email: str = Field(max_length=_MAX_FIELD, examples=["alice@example.com"])


class OptionalEmailRequest(StrictModel):
    email: str | None = Field(default=None, max_length=_MAX_FIELD)


class LinkToken(StrictModel):
    token: str = Field(max_length=_MAX_FIELD)


class PasswordReset(StrictModel):
    token: str = Field(max_length=_MAX_FIELD)
    new_password: str = Field(max_length=_MAX_FIELD)


class EmailChange(StrictModel):
    email: str = Field(max_length=_MAX_FIELD)
    current_password: str = Field(max_length=_MAX_FIELD)


class TotpEnrolmentRequest(StrictModel):
    """An access token and the current password, or (a role that needs a factor, at login) the
    enrol-only ``mfa_token`` alone."""

    current_password: str | None = Field(default=None, max_length=_MAX_FIELD)
    mfa_token: str | None = Field(default=None, max_length=_MAX_FIELD)


class TotpConfirmation(StrictModel):
    code: str = Field(max_length=_MAX_FIELD, examples=["123456"])
    # The enrol-only token, when enrolling at login: the answer then logs the user in too.
    mfa_token: str | None = Field(default=None, max_length=_MAX_FIELD)


class ReauthWithCode(StrictModel):
    current_password: str = Field(max_length=_MAX_FIELD)
    code: str = Field(max_length=_MAX_FIELD, description="a TOTP code or a recovery code")


class MfaLoginBase(StrictModel):
    mfa_token: str = Field(max_length=_MAX_FIELD)
    code: str | None = Field(
        default=None, max_length=_MAX_FIELD, description="a TOTP code or a recovery code"
    )


class RefreshRequest(StrictModel):
    refresh_token: str | None = Field(default=None, max_length=_MAX_TOKEN)


class LogoutRequest(StrictModel):
    scope: Literal["local", "global", "others"] = "local"


class PasswordChange(StrictModel):
    current_password: str = Field(max_length=_MAX_FIELD)
    new_password: str = Field(max_length=_MAX_FIELD)


class IntrospectionRequest(StrictModel):
    token: str = Field(max_length=_MAX_TOKEN)
    token_type_hint: str | None = Field(default=None, max_length=64)


class Introspection(BaseModel):
    """RFC 7662 §2.2. Only ``active`` when the token is not a live access token."""

    active: bool
    token_type: Literal["Bearer"] | None = None
    sub: str | None = None
    username: str | None = None
    roles: list[str] | None = None
    iss: str | None = None
    aud: str | list[str] | None = None
    exp: int | None = None
    iat: int | None = None
    nbf: int | None = None
    jti: str | None = None
    sid: str | None = None
    amr: list[str] | None = None
    aal: str | None = None
    auth_time: int | None = None


class UserOut(BaseModel):
    id: str
    username: str
    roles: list[str]
    created_at: datetime
    email: str | None
    email_verified: bool


class Accepted(BaseModel):
    """202: the same body whether or not a message was sent."""

    detail: str


class SignupPending(BaseModel):
    """Signup with AUTHSVC_EMAIL_VERIFICATION=required: the user, no tokens yet."""

    user: UserOut


class TokenResponse(BaseModel):
    # Absent only in cookie mode, when the refresh came from the httpOnly cookie.
    access_token: str | None = None
    refresh_token: str | None = None
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105
    expires_in: int
    user: UserOut | None = None


class EnrolledTokenResponse(TokenResponse):
    """A TOTP confirmed with the enrol-only mfa_token: the recovery codes and the login."""

    recovery_codes: list[str]


class TotpEnrolmentOut(BaseModel):
    id: str
    secret: str
    otpauth_uri: str
    qr_svg: str = Field(description="inline SVG markup of the otpauth URI's QR code")


class RecoveryCodes(BaseModel):
    """Shown once: only their digests are kept."""

    recovery_codes: list[str]


class FactorOut(BaseModel):
    id: str
    type: Literal["totp", "passkey"]
    created_at: datetime
    last_used_at: datetime | None


class FactorList(BaseModel):
    factors: list[FactorOut]
    recovery_codes_left: int


class SessionOut(BaseModel):
    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip: str | None
    current: bool


class SessionList(BaseModel):
    sessions: list[SessionOut]


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable machine-readable ``code``."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str


class Jwk(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kty: str
    kid: str
    use: str
    alg: str
    crv: str | None = None
    x: str | None = None
    y: str | None = None
    n: str | None = None
    e: str | None = None


class JwkSet(BaseModel):
    keys: list[Jwk]


class Discovery(BaseModel):
    model_config = ConfigDict(extra="allow")
    issuer: str
    jwks_uri: str


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


def user_out(user: UserLike) -> UserOut:
    return UserOut(
        id=str(user.id),
        username=user.username,
        roles=list(user.roles or []),
        created_at=user.created_at,
        email=user.email,
        email_verified=user.email_verified,
    )
