"""JWKS, discovery, health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import jwt
import pytest

from tests.support.helpers import assert_problem, bearer, login, signup
from tests.support.settings import ISSUER

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


def test_jwks_publishes_public_keys_only(client):
    signup(client)  # makes sure a key exists
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
    keys = response.get_json()["keys"]
    assert len(keys) == 1
    key = keys[0]
    assert not PRIVATE_MEMBERS & set(key)
    assert set(key) <= {"kty", "crv", "x", "y", "n", "e", "kid", "use", "alg"}
    assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256"
    assert key["use"] == "sig"


def test_jwks_max_age_is_configurable(make_app):
    client = make_app(AUTHSVC_JWKS_MAX_AGE="60").test_client()
    assert client.get("/.well-known/jwks.json").headers["Cache-Control"] == "public, max-age=60"


def test_discovery_document_names_the_issuer_and_jwks(client):
    response = client.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["issuer"] == ISSUER
    assert doc["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
    assert doc["access_token_audience"] == ["authsvc"]
    assert doc["access_token_lifetime"] == 900
    assert doc["refresh_token_lifetime"] == 2_592_000
    assert doc["login_endpoint"] == f"{ISSUER}/login"


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_access_token_verifies_from_discovery_alone(make_app, alg):
    """What a downstream service does: discovery -> JWKS -> verify with typ, iss, aud, exp."""
    client = make_app(AUTHSVC_SIGNING_ALG=alg).test_client()
    token = signup(client)["access_token"]
    doc = client.get("/.well-known/openid-configuration").get_json()
    jwks_path = doc["jwks_uri"].removeprefix(doc["issuer"])
    jwk_set = jwt.PyJWKSet.from_dict(client.get(jwks_path).get_json())
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == alg
    key = next(k for k in jwk_set.keys if k.key_id == header["kid"])
    claims = jwt.decode(
        token,
        key,
        algorithms=doc["id_token_signing_alg_values_supported"],
        audience=doc["access_token_audience"],
        issuer=doc["issuer"],
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    assert claims["type"] == "access"
    assert isinstance(claims["sub"], str)


def test_a_refresh_token_never_verifies_with_any_published_key(client):
    """Refresh tokens are HS256 with a secret only authsvc holds (DESIGN §3): a downstream
    service following the README recipe cannot verify one at all, with any published key."""
    tokens = signup(client)
    doc = client.get("/.well-known/openid-configuration").get_json()
    jwks = client.get("/.well-known/jwks.json").get_json()
    header = jwt.get_unverified_header(tokens["refresh_token"])
    assert header["alg"] == "HS256" and header["typ"] != "at+jwt"
    assert header["kid"] not in {key["kid"] for key in jwks["keys"]}
    assert all("k" not in key for key in jwks["keys"])  # no symmetric key is ever published
    for key in jwt.PyJWKSet.from_dict(jwks).keys:
        with pytest.raises(jwt.InvalidTokenError):
            jwt.decode(
                tokens["refresh_token"],
                key,
                algorithms=doc["id_token_signing_alg_values_supported"],
                audience=doc["access_token_audience"],
                issuer=ISSUER,
            )
    assert "HS256" not in doc["id_token_signing_alg_values_supported"]


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_readyz_checks_database_and_keys(client, backend):
    response = client.get("/readyz")
    assert response.status_code == 200
    checks = response.get_json()["checks"]
    assert checks["database"] == "ok" and checks["keys"] == "ok"
    assert ("redis" in checks) == (backend == "postgres")


def test_readyz_is_503_when_the_database_is_unreachable(make_app, tmp_path):
    app = make_app(DATABASE_URL=f"sqlite:///{tmp_path}/missing-dir/nope.db")
    response = app.test_client().get("/readyz")
    body = assert_problem(response, 503, "unavailable")
    assert body["checks"]["database"] == "unavailable"
    assert response.headers["Retry-After"].isdigit()


def test_readyz_is_503_when_redis_is_unreachable(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    response = app.test_client().get("/readyz")
    body = assert_problem(response, 503, "unavailable")
    assert body["checks"]["redis"] == "unavailable"


def test_token_checks_fall_back_to_the_database_when_redis_is_unreachable(make_app):
    """REDIS_URL set, Redis down (DESIGN §3): the session row decides. A live session is
    served; a logged-out one stays refused, with no revocation subscription to trust."""
    healthy = make_app()
    client = healthy.test_client()
    live = signup(client)
    logged_out = login(client)
    assert client.post("/logout", headers=bearer(logged_out["access_token"])).status_code == 204
    broken = make_app(REDIS_URL="redis://127.0.0.1:1/0").test_client()
    assert broken.get("/me", headers=bearer(live["access_token"])).status_code == 200
    response = broken.get("/me", headers=bearer(logged_out["access_token"]))
    assert_problem(response, 401, "token_revoked")


def test_metrics_count_requests_in_development(make_app):
    client = make_app(AUTHSVC_ENV="development").test_client()
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert 'authsvc_http_requests_total{endpoint="/healthz",method="GET",status="200"}' in text


@pytest.mark.parametrize(
    "settings",
    [{}, {"AUTHSVC_ENV": "development", "AUTHSVC_METRICS_BIND": "127.0.0.1:9100"}],
)
def test_metrics_are_not_on_the_public_listener(make_app, settings):
    """Outside development, or with a metrics listener of their own (gunicorn.conf.py)."""
    response = make_app(**settings).test_client().get("/metrics")
    assert_problem(response, 404, "not_found")
    assert "authsvc_http_requests_total" not in response.get_data(as_text=True)


def test_request_id_is_honoured_and_returned(client):
    response = client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert response.headers["X-Request-Id"] == "abc-123"
    generated = client.get("/healthz", headers={"X-Request-Id": "bad id <script>"}).headers[
        "X-Request-Id"
    ]
    assert generated and generated != "bad id <script>"


def test_openapi_document_is_generated_from_the_models(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path, method in [
        ("/signup", "post"),
        ("/login", "post"),
        ("/refresh", "post"),
        ("/logout", "post"),
        ("/me", "get"),
        ("/password", "post"),
        ("/sessions", "get"),
        ("/sessions/{session_id}", "delete"),
        ("/.well-known/jwks.json", "get"),
        ("/.well-known/openid-configuration", "get"),
        ("/email/verification", "post"),
        ("/email/verify", "post"),
        ("/password/forgot", "post"),
        ("/password/reset", "post"),
        ("/email/change", "post"),
    ]:
        assert method in paths[path], path
    signup_body = paths["/signup"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = doc["components"]["schemas"][signup_body["$ref"].rsplit("/", 1)[-1]]
    assert set(schema["properties"]) == {"username", "password", "email"}
    assert schema.get("additionalProperties") is False
    assert paths["/me"]["get"]["security"] == [{"bearer": []}]
