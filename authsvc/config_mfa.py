"""The second-factor settings (DESIGN §10): who must have one, how wrong codes are throttled,
the name authenticator apps show, and the WebAuthn relying party. Read by
``authsvc.config.load_settings`` with the rest, validated at start."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .config_reader import ConfigError, Reader

MFA_VARIABLES = frozenset(
    {
        "AUTHSVC_MFA_REQUIRED_ROLES",
        "AUTHSVC_MFA_ISSUER_NAME",
        "AUTHSVC_RATELIMIT_MFA_CODE",
        "AUTHSVC_RATELIMIT_MFA_ADDRESS",
        "AUTHSVC_WEBAUTHN_RP_ID",
        "AUTHSVC_WEBAUTHN_RP_NAME",
        "AUTHSVC_WEBAUTHN_ORIGINS",
    }
)


@dataclass(frozen=True)
class MfaSettings:
    required_roles: frozenset[str]  # a user holding one of these must have a factor
    issuer_name: str  # the label authenticator apps show above the code
    ratelimit_code: str  # wrong codes per user (every factor of theirs, recovery codes too)
    ratelimit_address: str  # each MFA endpoint, per client address
    webauthn_rp_id: str  # a registrable domain: the passkeys' scope
    webauthn_rp_name: str
    webauthn_origins: tuple[str, ...]  # the origins a ceremony may come from


def mfa_settings(read: Reader, issuer: str) -> MfaSettings:
    issuer_parts = urlsplit(issuer)
    rp_id = read.string("AUTHSVC_WEBAUTHN_RP_ID", issuer_parts.hostname or "localhost").lower()
    configured = read.csv("AUTHSVC_WEBAUTHN_ORIGINS")
    # Unset: the issuer's own origin. An http issuer on a compose network (http://authsvc:8000)
    # is no origin a browser makes passkeys on, but it must not stop the start either.
    origins = configured or (f"{issuer_parts.scheme}://{issuer_parts.netloc}",)
    for origin in origins:
        _check_origin(origin, rp_id, strict=bool(configured))
    return MfaSettings(
        required_roles=frozenset(read.csv("AUTHSVC_MFA_REQUIRED_ROLES")),
        issuer_name=read.string("AUTHSVC_MFA_ISSUER_NAME", "authsvc"),
        # A 6-digit code with one step of drift is a 3-in-a-million guess: 5 a minute, 20 an
        # hour and 100 a day keep a year of guessing under about a one-in-ten chance, while
        # the owner, who mistypes a few times at most, never meets the limit.
        ratelimit_code=read.rate_limit("AUTHSVC_RATELIMIT_MFA_CODE", "5/minute;20/hour;100/day"),
        ratelimit_address=read.rate_limit("AUTHSVC_RATELIMIT_MFA_ADDRESS", "30/minute"),
        webauthn_rp_id=rp_id,
        webauthn_rp_name=read.string("AUTHSVC_WEBAUTHN_RP_NAME", "authsvc"),
        webauthn_origins=origins,
    )


def _check_origin(origin: str, rp_id: str, *, strict: bool) -> None:
    name = "AUTHSVC_WEBAUTHN_ORIGINS"
    parts = urlsplit(origin)
    host = (parts.hostname or "").lower()
    if parts.scheme not in {"http", "https"} or not host or parts.path not in {"", "/"}:
        raise ConfigError(f"{name}: {origin!r} is not an origin like https://app.example.com")
    if strict and parts.scheme == "http" and host not in {"localhost", "127.0.0.1"}:
        raise ConfigError(f"{name}: {origin!r} is not https (http is for localhost only)")
    # WebAuthn: the RP id is the origin's host or a registrable suffix of it.
    if host != rp_id and not host.endswith("." + rp_id):
        raise ConfigError(
            f"AUTHSVC_WEBAUTHN_RP_ID {rp_id!r} is neither the host of {origin!r} nor a parent "
            "domain of it"
        )
