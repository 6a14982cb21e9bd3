"""The flask-jwt-extended glue: its configuration, its callbacks, and the one helper every
authenticated view calls (``authenticated``).

A request's token check is one straight path: ``authenticated()`` -> flask-jwt-extended's
``verify_jwt_in_request`` (the verified-token cache first, else PyJWT with the key from
``verify.verification_key``) -> ``verify.live_caller`` (one read of the session) -> the view.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, Response
from flask_jwt_extended import JWTManager, get_jwt, get_jwt_request_location, verify_jwt_in_request
from jwt import get_unverified_header

from ..compat import pyjwt
from ..compat.flask_jwt_extended import cache_decoded_tokens
from ..config import SIGNING_ALGORITHMS, Settings
from ..errors import Forbidden, InvalidToken, MfaRequiredForAdmin, MissingToken, TokenRevoked
from ..extensions import jwt
from ..models import AccessContext, AdminCaller
from ..observability import set_actor
from ..runtime import runtime
from ..security.keys import HMAC_ALG
from . import issue, verify


def register_tokens(app: Flask, settings: Settings) -> None:
    app.config.update(jwt_config(settings))
    pyjwt.install()  # before the first token is parsed; see the module for why
    jwt.init_app(app)
    cache_decoded_tokens(jwt, lambda: _APP_CACHE)
    _register_callbacks(jwt)


def authenticated(
    *, refresh: bool = False, any_type: bool = False, locations: Sequence[str] | None = None
) -> AccessContext:
    """The caller of this request: a verified token (an access token unless ``refresh`` or
    ``any_type``) whose session is live. Raises the 401 problem otherwise."""
    verify_jwt_in_request(
        refresh=refresh,
        verify_type=not any_type,
        locations=list(locations) if locations is not None else None,
        # Checked just below, once, with the caller read in the same statement.
        skip_revocation_check=True,
    )
    claims = get_jwt()
    if claims["type"] not in ("access", "refresh"):
        raise InvalidToken()  # an admin token opens the admin API only
    user = verify.live_caller(claims)
    set_actor(str(user.id))
    return AccessContext(
        user=user,
        session_id=uuid.UUID(claims["sid"]),
        jti=claims["jti"],
        token_type=claims["type"],
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )


def admin_caller() -> AdminCaller:
    """The caller of an admin request (DESIGN §11), checked before its body is read: an
    operator's admin token, or an access token of a user who holds the admin role now (the
    stored roles, read fresh, never the token's) in a session proven at aal2. No token: 401;
    anyone else: 403 ``forbidden``; an admin at aal1: 403 ``mfa_required_for_admin``."""
    verify_jwt_in_request(verify_type=False, skip_revocation_check=True)
    claims = get_jwt()
    if claims["type"] == issue.ADMIN_TOKEN_TYPE:
        set_actor(claims["sub"])
        return AdminCaller(actor_id=claims["sub"], user_id=None, roles=None)
    if claims["type"] != "access":
        raise InvalidToken("This endpoint needs an access token.")
    found = verify.principal_now(claims)
    if found is None or not found[0].live:
        raise TokenRevoked()
    principal, aal = found
    user = principal.caller
    set_actor(str(user.id))
    if runtime().settings.admin.role not in user.roles:
        raise Forbidden()
    if aal != "aal2":
        raise MfaRequiredForAdmin()
    return AdminCaller(actor_id=str(user.id), user_id=user.id, roles=frozenset(user.roles))


def refresh_token_claims(locations: Sequence[str]) -> dict[str, Any]:
    """A verified refresh token's claims. Its session is not read here: the rotation's own
    UPDATE is the session check (live, this user's, user active)."""
    verify_jwt_in_request(refresh=True, locations=list(locations), skip_revocation_check=True)
    return get_jwt()


def token_came_from_cookie() -> bool:
    return get_jwt_request_location() == "cookies"


class _AppCache:
    """The current app's verified-token cache, as ``compat.flask_jwt_extended`` asks for it."""

    def claims(self, encoded_token: str) -> dict[str, Any] | None:
        rt = runtime()
        return rt.verified_tokens.get(
            encoded_token, leeway=rt.settings.leeway, key_published=_key_published
        )

    def remember(self, encoded_token: str, claims: dict[str, Any]) -> None:
        # Refresh tokens are used once (rotation): only access tokens are worth remembering.
        if claims.get("type") == "access":
            # Verified with the key this kid names (verify.verification_key).
            kid = get_unverified_header(encoded_token)["kid"]
            runtime().verified_tokens.put(encoded_token, kid, claims)


_APP_CACHE = _AppCache()


def _key_published(kid: str) -> bool:
    return runtime().keyring.verification_key(kid) is not None


def _register_callbacks(manager: JWTManager) -> None:
    """Wire signing and verification to our keys, and every failure to a 401 problem."""
    manager.encode_key_loader(issue.signing_key)
    manager.decode_key_loader(verify.verification_key)
    manager.token_in_blocklist_loader(verify.is_revoked)

    # flask-jwt-extended answers 401/422 with its own bodies by default; every case here becomes
    # a problem+json 401 with a WWW-Authenticate challenge.
    @manager.unauthorized_loader
    def _missing(_reason: str) -> Response:
        return MissingToken().response()

    @manager.invalid_token_loader
    def _invalid(_reason: str) -> Response:
        return InvalidToken().response()

    @manager.expired_token_loader
    def _expired(_header: dict[str, Any], _claims: dict[str, Any]) -> Response:
        return InvalidToken("The token has expired.").response()

    @manager.revoked_token_loader
    def _revoked(_header: dict[str, Any], _claims: dict[str, Any]) -> Response:
        return TokenRevoked().response()

    @manager.token_verification_failed_loader
    def _verification_failed(_header: dict[str, Any], _claims: dict[str, Any]) -> Response:
        return InvalidToken().response()

    @manager.needs_fresh_token_loader
    def _not_fresh(_header: dict[str, Any], _claims: dict[str, Any]) -> Response:
        return InvalidToken("This action needs a fresh login.").response()


def jwt_config(settings: Settings) -> dict[str, Any]:
    """flask-jwt-extended settings derived from ours."""
    audience = list(settings.audience)
    return dict(
        JWT_ALGORITHM=settings.signing_alg,
        # Every algorithm we sign with (HS256: refresh tokens), so retired keys of another
        # algorithm still verify; verify.verification_key() pins each token to its own kid's.
        JWT_DECODE_ALGORITHMS=[*SIGNING_ALGORITHMS, HMAC_ALG],
        JWT_ENCODE_ISSUER=settings.issuer,
        JWT_DECODE_ISSUER=settings.issuer,
        JWT_ENCODE_AUDIENCE=audience[0] if len(audience) == 1 else audience,
        # Refresh tokens carry the issuer as audience; verify.check_token_shape() keeps each
        # type to its own audience.
        # ... and admin tokens the admin audience (issue.admin_audience).
        JWT_DECODE_AUDIENCE=[*audience, settings.issuer, issue.admin_audience(settings.issuer)],
        JWT_DECODE_LEEWAY=settings.leeway,
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=settings.access_token_ttl),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(seconds=settings.refresh_token_ttl),
        JWT_TOKEN_LOCATION=list(settings.token_location),
        JWT_IDENTITY_CLAIM="sub",
        JWT_ENCODE_NBF=True,
        JWT_JSON_KEY="access_token",
        JWT_REFRESH_JSON_KEY="refresh_token",
        JWT_QUERY_STRING_NAME="access_token",
        JWT_COOKIE_SECURE=not settings.development,
        JWT_COOKIE_SAMESITE="Lax",
        # Double-submit CSRF only matters (and the csrf claim is only embedded) in cookie mode.
        JWT_COOKIE_CSRF_PROTECT="cookies" in settings.token_location,
        # The long-lived refresh token travels to /refresh (and a copy to /logout, set by
        # api/responses.py, so a browser can log out after its access cookie expired).
        JWT_REFRESH_COOKIE_PATH="/refresh",
        # Persistent cookies, each with its token's own lifetime (set per response).
        JWT_SESSION_COOKIE=False,
        # Unused (keys come from the loaders above) but flask-jwt-extended insists on a value.
        JWT_SECRET_KEY=settings.secret_key,
    )
