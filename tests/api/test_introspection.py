"""POST /introspect (RFC 7662): live access tokens are active, everything else is not."""

from __future__ import annotations

import base64
import time

import pytest

from tests.support.helpers import PASSWORD, assert_problem, bearer, claims_of, login, signup

CLIENTS = "orders:orders-secret-123,billing:billing-secret-456"


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


ORDERS = basic("orders", "orders-secret-123")


@pytest.fixture
def app(make_app):
    return make_app(AUTHSVC_INTROSPECTION_CLIENTS=CLIENTS)


def introspect(client, token, headers=ORDERS, as_json=False):
    if as_json:
        return client.post("/introspect", json={"token": token}, headers=headers)
    return client.post("/introspect", data={"token": token}, headers=headers)


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_live_access_token_is_active_with_its_claims(client, as_json):
    tokens = signup(client, username="Alice")
    response = introspect(client, tokens["access_token"], as_json=as_json)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    claims = claims_of(tokens["access_token"])
    assert body["active"] is True
    assert body["token_type"] == "Bearer"
    assert body["username"] == "alice"
    for name in ("sub", "iss", "aud", "exp", "iat", "nbf", "jti", "sid", "roles"):
        assert body[name] == claims[name], name


def inactive(response):
    assert response.status_code == 200
    assert response.get_json() == {"active": False}


def test_logged_out_token_is_inactive(client):
    tokens = signup(client)
    client.post("/logout", headers=bearer(tokens["access_token"]))
    inactive(introspect(client, tokens["access_token"]))


def test_token_of_a_revoked_session_is_inactive(client):
    keep = signup(client)
    other = login(client)
    sid = claims_of(other["access_token"])["sid"]
    client.delete(f"/sessions/{sid}", headers=bearer(keep["access_token"]))
    inactive(introspect(client, other["access_token"]))
    assert introspect(client, keep["access_token"]).get_json()["active"] is True


def test_refresh_token_is_inactive(client):
    inactive(introspect(client, signup(client)["refresh_token"]))


def test_expired_token_is_inactive(make_app):
    app = make_app(
        AUTHSVC_INTROSPECTION_CLIENTS=CLIENTS, AUTHSVC_ACCESS_TOKEN_TTL="1", AUTHSVC_LEEWAY="0"
    )
    client = app.test_client()
    tokens = signup(client)
    time.sleep(2.1)
    inactive(introspect(client, tokens["access_token"]))


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."])
def test_garbage_is_inactive(client, token):
    inactive(introspect(client, token))


def test_forged_token_is_inactive(client):
    tokens = signup(client)
    header, payload, signature = tokens["access_token"].split(".")
    forged = payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB")
    inactive(introspect(client, f"{header}.{forged}.{signature}"))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("orders", "wrong"),
        basic("nobody", "orders-secret-123"),
        basic("billing", "orders-secret-123"),
        {"Authorization": "Basic not-base64!!"},
        {"Authorization": "Bearer orders-secret-123"},
    ],
    ids=["none", "wrong secret", "unknown client", "other client's secret", "malformed", "bearer"],
)
def test_bad_client_credentials_are_401(client, headers):
    tokens = signup(client)
    response = introspect(client, tokens["access_token"], headers=headers)
    assert_problem(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'


def test_no_configured_clients_means_no_introspection(make_app):
    client = make_app().test_client()
    tokens = signup(client)
    assert_problem(introspect(client, tokens["access_token"]), 401, "invalid_client")


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        ({"token_type_hint": "access_token"}, None, 400),
        ({"token": "x", "extra": "y"}, None, 400),
        (b"token=a&token=b", "application/x-www-form-urlencoded", 400),
        (b"token=x", "text/plain", 415),
    ],
    ids=["missing token", "unknown field", "repeated token", "not form or json"],
)
def test_bad_bodies(client, data, content_type, status):
    kwargs = {"content_type": content_type} if content_type else {}
    response = client.post("/introspect", data=data, headers=ORDERS, **kwargs)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"


def test_introspection_with_redis_down(make_app):
    """The token check falls back to the database (a logged-out token is still inactive); the
    client-failure throttling needs Redis, so with throttling on the answer is 503."""
    healthy = make_app(AUTHSVC_INTROSPECTION_CLIENTS=CLIENTS)
    client = healthy.test_client()
    live = signup(client)
    logged_out = client.post("/login", json={"username": "alice", "password": PASSWORD}).get_json()
    assert client.post("/logout", headers=bearer(logged_out["access_token"])).status_code == 204
    down = {"AUTHSVC_INTROSPECTION_CLIENTS": CLIENTS, "REDIS_URL": "redis://127.0.0.1:1/0"}
    broken = make_app(**down).test_client()
    assert introspect(broken, live["access_token"]).get_json()["active"] is True
    assert introspect(broken, logged_out["access_token"]).get_json() == {"active": False}
    throttled = make_app(**down, AUTHSVC_RATELIMIT_ENABLED="true").test_client()
    assert_problem(introspect(throttled, live["access_token"]), 503, "unavailable")


def test_discovery_names_the_introspection_endpoint(client):
    doc = client.get("/.well-known/openid-configuration").get_json()
    assert doc["introspection_endpoint"] == doc["issuer"] + "/introspect"
    assert doc["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic"]
