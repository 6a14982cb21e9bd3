"""authsvc.tokens: the exact shape of issued tokens (DESIGN §3) and the session check."""

from __future__ import annotations

import time
import uuid

import jwt

from tests.support.helpers import bearer, claims_of, signup
from tests.support.settings import ISSUER

ACCESS_CLAIMS = {
    *("iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "roles", "type", "fresh"),
    *("amr", "aal", "auth_time"),  # DESIGN §10
}


def test_access_token_header_and_claims(client):
    tokens = signup(client)
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    assert header["kid"] == client.get("/.well-known/jwks.json").get_json()["keys"][0]["kid"]
    claims = claims_of(tokens["access_token"])
    assert set(claims) == ACCESS_CLAIMS  # nothing else (no csrf claim in header mode)
    assert claims["iss"] == ISSUER
    assert claims["aud"] == "authsvc"
    assert claims["sub"] == tokens["user"]["id"]
    assert claims["type"] == "access"
    assert claims["exp"] - claims["iat"] == 900
    assert claims["nbf"] <= time.time() + 1
    uuid.UUID(claims["sid"])
    uuid.UUID(claims["jti"])


def test_refresh_token_header_and_claims(client):
    tokens = signup(client)
    header = jwt.get_unverified_header(tokens["refresh_token"])
    assert header["typ"] != "at+jwt"
    claims = claims_of(tokens["refresh_token"])
    assert claims["type"] == "refresh"
    assert claims["aud"] == ISSUER  # never an access-token audience
    assert claims["gen"] == 0
    assert claims["sid"] == claims_of(tokens["access_token"])["sid"]
    assert claims["exp"] - claims["iat"] == 2_592_000
    assert "roles" not in claims


def test_lifetimes_and_audiences_are_configurable(make_app):
    app = make_app(
        AUTHSVC_ACCESS_TOKEN_TTL="60",
        AUTHSVC_REFRESH_TOKEN_TTL="3600",
        AUTHSVC_AUDIENCE="orders,billing",
    )
    body = signup(app.test_client())
    access = claims_of(body["access_token"])
    assert access["exp"] - access["iat"] == 60
    assert body["expires_in"] == 60
    assert access["aud"] == ["orders", "billing"]
    refresh = claims_of(body["refresh_token"])
    assert refresh["exp"] - refresh["iat"] == 3600


def test_every_token_has_a_unique_jti(client):
    first = signup(client)
    second = client.post("/refresh", headers=bearer(first["refresh_token"])).get_json()
    tokens = [body[name] for body in (first, second) for name in ("access_token", "refresh_token")]
    jtis = {claims_of(token)["jti"] for token in tokens}
    assert len(jtis) == 4


def test_a_plain_jwt_required_view_still_checks_the_session(make_app):
    """The blocklist loader is the safety net for a view that uses flask-jwt-extended's own
    decorator instead of tokens.flask.authenticated(): a logged-out token is refused there too."""
    from flask_jwt_extended import jwt_required

    app = make_app()

    @app.get("/plain")
    @jwt_required()
    def plain() -> str:
        return "in"

    client = app.test_client()
    tokens = signup(client)
    headers = bearer(tokens["access_token"])
    assert client.get("/plain", headers=headers).status_code == 200
    assert client.post("/logout", headers=headers).status_code == 204
    response = client.get("/plain", headers=headers)
    assert response.status_code == 401 and response.get_json()["code"] == "token_revoked"
