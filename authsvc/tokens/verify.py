"""Verifying our tokens: their exact shape, the key their ``kid`` names, and their session.

flask-jwt-extended (through ``authsvc.tokens.flask``) does the signature and the registered
claims with PyJWT; this module supplies the key (``verification_key``), refuses anything that is
not exactly one of our tokens before the signature is even checked (``check_token_shape``), and
answers whether a verified token's session still lets it in (``principal``).
"""

from __future__ import annotations

import uuid
from typing import Any

from flask_jwt_extended import decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt.exceptions import InvalidAlgorithmError, InvalidTokenError, PyJWTError

from ..errors import TokenRevoked
from ..models import Caller, Principal, utcnow
from ..observability import SESSION_STATE_READS
from ..runtime import runtime
from ..security.keys import HMAC_ALG
from ..store import sessions as session_store
from .issue import ACCESS_TYP, ADMIN_SCOPE, ADMIN_TOKEN_TYPE, REFRESH_TYP, admin_audience

_FROM_CACHE = SESSION_STATE_READS.labels("cache")
_FROM_DATABASE = SESSION_STATE_READS.labels("database")
_BYPASSED = SESSION_STATE_READS.labels("bypass")
_REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti", "type")


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
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if not all(isinstance(audience, str) for audience in audiences):
        raise InvalidTokenError("bad audience")
    if claims["type"] == ADMIN_TOKEN_TYPE:
        if header.get("typ") != ACCESS_TYP or "sid" in claims:
            raise InvalidTokenError("wrong typ or a session")
        if audiences != [admin_audience(settings.issuer)] or claims.get("scope") != ADMIN_SCOPE:
            raise InvalidTokenError("wrong audience or scope")
        return
    try:
        uuid.UUID(str(claims.get("sid")))
    except ValueError:
        raise InvalidTokenError("bad sid") from None
    if claims["type"] == "access":
        if header.get("typ") != ACCESS_TYP:
            raise InvalidTokenError("wrong typ")
        roles = claims.get("roles")
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise InvalidTokenError("bad roles")
        admin = admin_audience(settings.issuer)
        if (
            settings.issuer in audiences
            or admin in audiences
            or not set(audiences) & set(settings.audience)
        ):
            raise InvalidTokenError("wrong audience")
    elif claims["type"] == "refresh":
        if header.get("typ") != REFRESH_TYP:
            raise InvalidTokenError("wrong typ")
        if audiences != [settings.issuer] or type(claims.get("gen")) is not int:
            raise InvalidTokenError("wrong audience or generation")
    else:
        raise InvalidTokenError("unknown token type")


def verification_key(header: dict[str, Any], claims: dict[str, Any]) -> Any:
    """flask-jwt-extended's decode_key_loader: the key named by ``kid``, algorithm pinned to it.

    An access token's ``kid`` names an asymmetric key and its own algorithm; a refresh token's
    names an HMAC secret (``hs.<kid>``) and HS256. Neither kind ever verifies the other's
    tokens: an HS256 header on an asymmetric kid (the public key as an HMAC secret) or an
    access token under an HMAC kid is refused before any signature is computed. ``jku``,
    ``x5u``, ``jwk`` and ``x5c`` headers are never read: keys come from our table only.
    """
    check_token_shape(header, claims)
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise InvalidTokenError("no kid")
    keyring = runtime().keyring
    if claims["type"] == "refresh":
        key = keyring.refresh_key(kid)
        if key is None:
            raise InvalidTokenError("unknown kid")
        if header.get("alg") != HMAC_ALG:
            raise InvalidAlgorithmError("algorithm does not match the key")
        return key.hmac_key
    key = keyring.verification_key(kid)
    if key is None:
        raise InvalidTokenError("unknown kid")
    if header.get("alg") != key.alg:
        raise InvalidAlgorithmError("algorithm does not match the key")
    return key.public_key


def principal(claims: dict[str, Any]) -> Principal | None:
    """Who a verified token names and whether its session still lets it in (DESIGN §3
    Revocation: the session row is the authority).

    The row comes from this process's session-state cache while its revocation subscription is
    healthy (``tokens.session_states``), else from one read statement outside any transaction.
    Liveness is computed from the row every time. None when the session does not exist.
    Database errors propagate: fail closed (503).
    """
    session_id = uuid.UUID(claims["sid"])
    states = runtime().session_states
    row = states.get(session_id)
    if row is not None:
        _FROM_CACHE.inc()
    else:
        epoch = states.reading()
        (_BYPASSED if epoch is None else _FROM_DATABASE).inc()
        row = session_store.principal_row(session_id)
        if row is None:
            return None
        states.put(session_id, row.id, row, epoch)
    return Principal(caller=Caller.from_row(row), live=_live(row, claims))


def _live(row: Any, claims: dict[str, Any]) -> bool:
    """Session neither revoked nor expired, user active and the one the token names."""
    return (
        row.revoked_at is None
        and row.expires_at > utcnow()
        and row.disabled_at is None
        and str(row.id) == claims["sub"]
    )


def principal_now(claims: dict[str, Any]) -> tuple[Principal, str] | None:
    """``principal`` read from the database now (no cache), and the session's assurance
    level: an admin request's rights are those stored at this moment (DESIGN §11)."""
    row = session_store.principal_row_now(uuid.UUID(claims["sid"]))
    if row is None:
        return None
    return Principal(caller=Caller.from_row(row), live=_live(row, claims)), row.aal


def live_caller(claims: dict[str, Any]) -> Caller:
    """The user of a verified token whose session is live; TokenRevoked (401) otherwise."""
    found = principal(claims)
    if found is None or not found.live:
        raise TokenRevoked()
    return found.caller


def is_revoked(_header: dict[str, Any], claims: dict[str, Any]) -> bool:
    """flask-jwt-extended's token_in_blocklist_loader: the safety net for any view that uses a
    plain ``@jwt_required()`` instead of ``authsvc.tokens.flask.authenticated``."""
    if "sid" not in claims:
        return True  # an admin token is for the admin API's own check only
    found = principal(claims)
    return found is None or not found.live


def introspect(token: str) -> tuple[dict[str, Any], Caller] | None:
    """The claims and user of a live access token, or None (RFC 7662 ``active: false``).

    The same checks as a request to this service: signature, claims, session (the same
    session-state cache, so a revocation on any replica is seen here as quickly).
    Refresh tokens are never active here. Store errors propagate: fail closed (503).
    """
    try:
        claims = decode_token(token)
    except (PyJWTError, JWTExtendedException):
        return None
    if claims.get("type") != "access":
        return None
    found = principal(claims)
    if found is None or not found.live:
        return None
    return claims, found.caller
