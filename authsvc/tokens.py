"""Issuing token pairs, and the flask-jwt-extended callbacks that verify and revoke them.

Access token (RFC 9068): header ``typ: at+jwt`` and ``kid``; claims iss, aud, sub, iat, nbf, exp,
jti, sid, roles, type=access, fresh. Refresh token: the same keys, ``type: refresh``, ``sid`` and
the session generation ``gen``, and ``aud`` = the issuer, so no downstream service that checks
``aud`` or ``typ`` can take it for an access token.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Response, g
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    decode_token,
)
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt.exceptions import InvalidAlgorithmError, InvalidTokenError, PyJWTError
from sqlalchemy import bindparam, exists, select
from werkzeug.local import LocalProxy

from .config import SIGNING_ALGORITHMS, Settings
from .database import DirectStatement
from .denylist import DatabaseDenylist
from .errors import InvalidToken, MissingToken, TokenRevoked
from .keys import PublicKey
from .models import RevokedToken, Session, SessionLike, User, UserLike, utcnow
from .runtime import runtime

ACCESS_TYP = "at+jwt"
REFRESH_TYP = "JWT"
_REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "type")


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_at: datetime


def issue_pair(user: UserLike, session: SessionLike, *, fresh: bool) -> TokenPair:
    """Sign an access token and a refresh token for ``session`` at its current generation."""
    rt = runtime()
    settings = rt.settings
    key = rt.keyring.signing_key()
    # encode_key_loader reads the key chosen here, so the kid header and the signature agree
    # even if another thread rotates the cached key meanwhile.
    g.authsvc_signing_key = key
    identity = str(user.id)
    sid = str(session.id)
    now = utcnow()
    refresh_expires_at = min(
        now + timedelta(seconds=settings.refresh_token_ttl), session.expires_at
    )
    access = create_access_token(
        identity=identity,
        fresh=fresh,
        expires_delta=timedelta(seconds=settings.access_token_ttl),
        additional_claims={"sid": sid, "roles": list(user.roles or [])},
        additional_headers={"kid": key.kid, "typ": ACCESS_TYP},
    )
    refresh = create_refresh_token(
        identity=identity,
        expires_delta=refresh_expires_at - now,
        additional_claims={"sid": sid, "gen": session.generation, "aud": settings.issuer},
        additional_headers={"kid": key.kid, "typ": REFRESH_TYP},
    )
    return TokenPair(access, refresh, settings.access_token_ttl, refresh_expires_at)


def check_token_shape(header: dict[str, Any], claims: dict[str, Any]) -> None:
    """Reject, before the signature is checked, anything that is not exactly one of our tokens.

    Runs on unverified data, so it can only refuse more, never accept more: the signature, exp,
    nbf, iat, iss and aud are then verified by PyJWT.
    """
    settings = runtime().settings
    missing = [claim for claim in _REQUIRED_CLAIMS if claim not in claims]
    if missing:
        raise InvalidTokenError("missing claims")
    if not isinstance(claims["sub"], str) or not isinstance(claims["jti"], str):
        raise InvalidTokenError("bad sub or jti")
    # PyJWT would accept numeric strings here; our tokens only ever carry integers.
    if any(type(claims[claim]) is not int for claim in ("iat", "nbf", "exp")):
        raise InvalidTokenError("bad time claim")
    try:
        uuid.UUID(str(claims["sid"]))
    except ValueError:
        raise InvalidTokenError("bad sid") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if not all(isinstance(audience, str) for audience in audiences):
        raise InvalidTokenError("bad audience")
    if claims["type"] == "access":
        if header.get("typ") != ACCESS_TYP:
            raise InvalidTokenError("wrong typ")
        roles = claims.get("roles")
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise InvalidTokenError("bad roles")
        if settings.issuer in audiences or not set(audiences) & set(settings.audience):
            raise InvalidTokenError("wrong audience")
    elif claims["type"] == "refresh":
        if header.get("typ") != REFRESH_TYP:
            raise InvalidTokenError("wrong typ")
        if audiences != [settings.issuer] or type(claims.get("gen")) is not int:
            raise InvalidTokenError("wrong audience or generation")
    else:
        raise InvalidTokenError("unknown token type")


def verification_key(header: dict[str, Any], claims: dict[str, Any]) -> PublicKey:
    """flask-jwt-extended's decode_key_loader: the key named by ``kid``, algorithm pinned to it.

    ``jku``, ``x5u``, ``jwk`` and ``x5c`` headers are never read: keys come from our table only.
    """
    check_token_shape(header, claims)
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise InvalidTokenError("no kid")
    key = runtime().keyring.verification_key(kid)
    if key is None:
        raise InvalidTokenError("unknown kid")
    if header.get("alg") != key.alg:
        raise InvalidAlgorithmError("algorithm does not match the key")
    return key.public_key


@dataclass(frozen=True, slots=True)
class Caller:
    """The user behind a live token: the columns the checks and the views need, not an ORM row.

    Read on every authenticated request by one Core query (``lookup``), which costs a fraction of
    loading two ORM objects; services that change the user load it themselves by ``id``.
    """

    id: uuid.UUID
    username: str
    roles: list[str]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Principal:
    caller: Caller
    live: bool  # session neither revoked nor expired, user active and named by `sub`, not denied


_PRINCIPAL_COLUMNS = (
    User.id,
    User.username,
    User.roles,
    User.created_at,
    User.disabled_at,
    Session.revoked_at,
    Session.expires_at,
)
_SELECT_BY_SESSION = (
    select(*_PRINCIPAL_COLUMNS)
    .join_from(Session, User, Session.user_id == User.id)
    .where(Session.id == bindparam("sid", type_=Session.id.type))
)
_BY_SESSION = DirectStatement(_SELECT_BY_SESSION)
# With the denylist in the database, its check rides along in the same statement.
_BY_SESSION_AND_DENYLIST = DirectStatement(
    _SELECT_BY_SESSION.add_columns(
        exists().where(RevokedToken.jti == bindparam("jti")).label("denied")
    )
)


def lookup(claims: dict[str, Any]) -> Principal | None:
    """Who a verified token names and whether its session still lets it in (cached on ``g``).

    One read statement outside any transaction (DESIGN §3 Revocation: session row, user, and the
    denylist by ``jti`` for access tokens); with Redis the denylist is one EXISTS after it.
    None when the session does not exist. Store errors propagate: fail closed (503).
    """
    cached = g.get("authsvc_principal")
    if cached is not None and cached[0] == claims["jti"]:
        return cached[1]
    denylist = runtime().denylist
    in_database = isinstance(denylist, DatabaseDenylist)
    query = _BY_SESSION_AND_DENYLIST if in_database else _BY_SESSION
    row = query.first({"sid": uuid.UUID(claims["sid"]), "jti": claims["jti"]})
    principal = None
    if row is not None:
        live = (
            row.revoked_at is None
            and row.expires_at > utcnow()
            and row.disabled_at is None
            and str(row.id) == claims["sub"]
        )
        if live and claims["type"] == "access":
            live = not (row.denied if in_database else denylist.contains(claims["jti"]))
        caller = Caller(
            id=row.id, username=row.username, roles=list(row.roles or []), created_at=row.created_at
        )
        principal = Principal(caller=caller, live=live)
    g.authsvc_principal = (claims["jti"], principal)
    return principal


def is_revoked(_header: dict[str, Any], claims: dict[str, Any]) -> bool:
    """flask-jwt-extended's token_in_blocklist_loader."""
    principal = lookup(claims)
    return principal is None or not principal.live


def introspect(token: str) -> tuple[dict[str, Any], Caller] | None:
    """The claims and user of a live access token, or None (RFC 7662 ``active: false``).

    The same checks as a request to this service: signature, claims, session, denylist.
    Refresh tokens are never active here. Store errors propagate: fail closed (503).
    """
    try:
        claims = decode_token(token)
    except (PyJWTError, JWTExtendedException):
        return None
    if claims.get("type") != "access":
        return None
    principal = lookup(claims)
    if principal is None or not principal.live:
        return None
    return claims, principal.caller


def current_caller(claims: dict[str, Any]) -> Caller:
    """The user of a token whose session is live (401 otherwise, even where the revocation
    check was skipped: nothing may act for a dead session)."""
    principal = lookup(claims)
    if principal is None or not principal.live:
        raise TokenRevoked()
    return principal.caller


def register_jwt_callbacks(jwt: JWTManager) -> None:
    """Wire verification to our keys and revocation, and every failure to a 401 problem."""

    @jwt.encode_key_loader
    def _encode_key(_identity: Any) -> Any:
        return g.authsvc_signing_key.private_key

    jwt.decode_key_loader(verification_key)
    jwt.token_in_blocklist_loader(is_revoked)

    @jwt.user_lookup_loader
    def _user(_header: dict[str, Any], claims: dict[str, Any]) -> Caller:
        # Read when first used, like Django's request.user: after the revocation check it is
        # already cached on g, and a /refresh (whose rotation returns the user) never reads it.
        return LocalProxy(functools.partial(current_caller, claims))  # type: ignore[return-value]

    # flask-jwt-extended answers 401/422 with its own bodies by default; every case here becomes
    # a problem+json 401 with a WWW-Authenticate challenge.
    @jwt.unauthorized_loader
    def _missing(_reason: str) -> Response:
        return MissingToken().response()

    @jwt.invalid_token_loader
    def _invalid(_reason: str) -> Response:
        return InvalidToken().response()

    @jwt.expired_token_loader
    def _expired(_header: dict[str, Any], _claims: dict[str, Any]) -> Response:
        return InvalidToken("The token has expired.").response()

    @jwt.revoked_token_loader
    def _revoked(_header: dict[str, Any], _claims: dict[str, Any]) -> Response:
        return TokenRevoked().response()

    @jwt.token_verification_failed_loader
    def _verification_failed(_header: dict[str, Any], _claims: dict[str, Any]) -> Response:
        return InvalidToken().response()

    @jwt.user_lookup_error_loader
    def _user_missing(_header: dict[str, Any], _claims: dict[str, Any]) -> Response:
        return TokenRevoked().response()

    @jwt.needs_fresh_token_loader
    def _not_fresh(_header: dict[str, Any], _claims: dict[str, Any]) -> Response:
        return InvalidToken("This action needs a fresh login.").response()


def jwt_config(settings: Settings) -> dict[str, Any]:
    """flask-jwt-extended settings derived from ours."""
    audience = list(settings.audience)
    return dict(
        JWT_ALGORITHM=settings.signing_alg,
        # Every algorithm we can sign with, so retired keys of another algorithm still verify;
        # verification_key() then pins each token to its own key's algorithm.
        JWT_DECODE_ALGORITHMS=list(SIGNING_ALGORITHMS),
        JWT_ENCODE_ISSUER=settings.issuer,
        JWT_DECODE_ISSUER=settings.issuer,
        JWT_ENCODE_AUDIENCE=audience[0] if len(audience) == 1 else audience,
        # Refresh tokens carry the issuer as audience; check_token_shape() keeps each type to
        # its own audience.
        JWT_DECODE_AUDIENCE=[*audience, settings.issuer],
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
        # The long-lived refresh token travels to /refresh only; /logout uses the access cookie.
        JWT_REFRESH_COOKIE_PATH="/refresh",
        # Persistent cookies, each with its token's own lifetime (set per response).
        JWT_SESSION_COOKIE=False,
        # Unused (keys come from the loaders above) but flask-jwt-extended insists on a value.
        JWT_SECRET_KEY=settings.secret_key,
    )
