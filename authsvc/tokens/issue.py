"""Signing a token pair for a session (DESIGN §3).

Access token (RFC 9068): signed with the active asymmetric key, header ``typ: at+jwt`` and
``kid``; claims iss, aud, sub, iat, nbf, exp, jti, sid, roles, amr, aal, auth_time (the
session's: a refresh keeps them, DESIGN §10), type=access, fresh (the login's token only). Refresh
token: HS256 with the active key's HMAC secret, which only this service holds (header ``kid``
``hs.<kid>``), ``type: refresh``, ``sid``, the session generation ``gen``, and ``aud`` = the
issuer: no downstream service can verify one, let alone take it for an access token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any

from flask_jwt_extended import create_access_token, create_refresh_token, decode_token

from ..models import SessionLike, TokenPair, UserLike, utcnow
from ..runtime import runtime
from ..security.keys import HMAC_ALG

ACCESS_TYP = "at+jwt"
REFRESH_TYP = "JWT"
# A token from `flask admin token` (DESIGN §11): no session, scope "admin", its own audience
# (no downstream service takes it for a user's access token).
ADMIN_TOKEN_TYPE = "admin"  # noqa: S105 (a claim value)
ADMIN_SCOPE = "admin"


def admin_audience(issuer: str) -> str:
    return f"{issuer.rstrip('/')}/admin"


# The key issue_pair chose, for flask-jwt-extended's encode_key_loader (``signing_key``): the
# loader is only given the identity, and the key must be the one whose kid the header names even
# if another thread rotates the key ring's cache meanwhile. Set and reset around each create_*
# call, within this module only.
_signing = ContextVar[Any]("authsvc_signing_key")


@contextmanager
def _signing_with(key: Any) -> Iterator[None]:
    reset = _signing.set(key)
    try:
        yield
    finally:
        _signing.reset(reset)


def signing_key(_identity: Any) -> Any:
    """flask-jwt-extended's encode_key_loader: the key issue_pair is signing with."""
    return _signing.get()


def issue_pair(user: UserLike, session: SessionLike, *, fresh: bool) -> TokenPair:
    """Sign an access token and a refresh token for ``session`` at its current generation."""
    rt = runtime()
    settings = rt.settings
    key = rt.keyring.signing_key()
    identity = str(user.id)
    sid = str(session.id)
    now = utcnow()
    refresh_expires_at = min(
        now + timedelta(seconds=settings.refresh_token_ttl), session.expires_at
    )
    with _signing_with(key.private_key):
        access = create_access_token(
            identity=identity,
            fresh=fresh,
            expires_delta=timedelta(seconds=settings.access_token_ttl),
            additional_claims={
                "sid": sid,
                "roles": list(user.roles or []),
                "amr": list(session.amr),
                "aal": session.aal,
                "auth_time": int(session.auth_time.timestamp()),
            },
            additional_headers={"kid": key.kid, "typ": ACCESS_TYP},
        )
    # PyJWT takes a header's "alg" over the configured algorithm (JWT_ALGORITHM, the access
    # tokens'), so the refresh token is HS256 with the key's HMAC secret.
    with _signing_with(key.hmac_key):
        refresh = create_refresh_token(
            identity=identity,
            expires_delta=refresh_expires_at - now,
            additional_claims={"sid": sid, "gen": session.generation, "aud": settings.issuer},
            additional_headers={"kid": key.hmac_kid, "typ": REFRESH_TYP, "alg": HMAC_ALG},
        )
    return TokenPair(access, refresh, settings.access_token_ttl, refresh_expires_at)


def issue_admin_token(name: str, ttl: int) -> tuple[str, str, datetime]:
    """An operator's admin token (``flask admin token``, DESIGN §11): ``sub`` ``operator:<name>``,
    scope ``admin``, the admin audience, no session (it cannot be revoked: keep ``ttl`` short).
    The token, its jti and when it expires."""
    rt = runtime()
    key = rt.keyring.signing_key()
    with _signing_with(key.private_key):
        token = create_access_token(
            identity=f"operator:{name}",
            expires_delta=timedelta(seconds=ttl),
            additional_claims={
                "type": ADMIN_TOKEN_TYPE,
                "scope": ADMIN_SCOPE,
                "aud": admin_audience(rt.settings.issuer),
            },
            additional_headers={"kid": key.kid, "typ": ACCESS_TYP},
        )
    claims = decode_token(token)
    return token, claims["jti"], datetime.fromtimestamp(claims["exp"], UTC)
