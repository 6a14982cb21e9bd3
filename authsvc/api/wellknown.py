"""What a downstream service needs to verify tokens: the JWK Set and the discovery document."""

from __future__ import annotations

from flask import Blueprint, Response, json

from ..config import SIGNING_ALGORITHMS
from ..runtime import runtime
from .openapi import documented
from .schemas import Discovery, JwkSet

bp = Blueprint("wellknown", __name__, url_prefix="/.well-known")


def _cacheable(payload: object) -> Response:
    response = Response(json.dumps(payload), mimetype="application/json")
    response.headers["Cache-Control"] = f"public, max-age={runtime().settings.jwks_max_age}"
    return response


@bp.get("/jwks.json")
@documented(ok=(200, JwkSet), errors=(503,), tag="discovery")
def jwks() -> Response:
    """The public keys that verify our tokens: next, active and retired. Never private parts."""
    keyring = runtime().keyring
    # Make sure a key exists: a verifier that fetches the set before the first login must not
    # cache an empty one for max-age seconds. (From the cache while the database is down.)
    keyring.cached_signing_key()
    return _cacheable(keyring.jwks())


@bp.get("/openid-configuration")
@documented(ok=(200, Discovery), errors=(503,), tag="discovery")
def discovery() -> Response:
    """Everything a verifier needs from the issuer URL alone."""
    settings = runtime().settings
    issuer = settings.issuer
    algorithms = sorted(
        {settings.signing_alg, *(key["alg"] for key in runtime().keyring.jwks()["keys"])}
    )
    return _cacheable(
        {
            "issuer": issuer,
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            # authsvc issues no ID tokens; OIDC verifier libraries read this field to pin the
            # algorithms of the issuer's JWTs, which are our access tokens.
            "id_token_signing_alg_values_supported": algorithms,
            "access_token_signing_alg_values_supported": algorithms,
            "access_token_audience": list(settings.audience),
            "access_token_type": "at+jwt",
            "signup_endpoint": f"{issuer}/signup",
            "login_endpoint": f"{issuer}/login",
            "refresh_endpoint": f"{issuer}/refresh",
            "logout_endpoint": f"{issuer}/logout",
            "userinfo_endpoint": f"{issuer}/me",
            "sessions_endpoint": f"{issuer}/sessions",
            "introspection_endpoint": f"{issuer}/introspect",
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
            "access_token_lifetime": settings.access_token_ttl,
            "refresh_token_lifetime": settings.refresh_token_ttl,
            "session_max_age": settings.session_max_age,
            "verification_leeway": settings.leeway,
            "jwks_max_age": settings.jwks_max_age,
            "supported_signing_algorithms": list(SIGNING_ALGORITHMS),
        }
    )
