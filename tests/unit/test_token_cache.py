"""authsvc.tokens.cache: a verified token is remembered, and nothing that should fail passes.

Each test first gets a token into the cache with a successful request, then attacks.
"""

from __future__ import annotations

import base64
import json
import time

from authsvc.runtime import runtime
from authsvc.tokens.cache import VerifiedTokens
from tests.support.helpers import assert_problem, bearer, signup

ORIGIN = "https://app.example.com"


def _cache(app) -> VerifiedTokens:
    with app.app_context():
        return runtime().verified_tokens


def _cached_access_token(client, app) -> str:
    token = signup(client)["access_token"]
    assert client.get("/me", headers=bearer(token)).status_code == 200
    assert token in _cache(app)
    return token


def test_a_repeated_access_token_is_served_from_the_cache(app, client):
    token = _cached_access_token(client, app)
    hits = _cache(app).hits
    for _ in range(3):
        assert client.get("/me", headers=bearer(token)).status_code == 200
    # Proves flask-jwt-extended still decodes through the wrapper of its private decode method
    # (authsvc/compat/flask_jwt_extended.py).
    assert _cache(app).hits == hits + 3


def test_refresh_tokens_are_not_stored(app, client):
    tokens = signup(client)
    assert client.post("/refresh", headers=bearer(tokens["refresh_token"])).status_code == 200
    assert tokens["refresh_token"] not in _cache(app)


def test_expired_token_is_refused_although_cached(make_app):
    app = make_app(AUTHSVC_ACCESS_TOKEN_TTL="1", AUTHSVC_LEEWAY="0")
    client = app.test_client()
    token = _cached_access_token(client, app)
    time.sleep(1.1)
    response = client.get("/me", headers=bearer(token))
    assert_problem(response, 401, "invalid_token")
    assert "expired" in response.get_json()["detail"]
    assert token not in _cache(app)


def test_logged_out_token_is_refused_although_cached(app, client):
    """Revocation is never cached: it is checked on every request."""
    token = _cached_access_token(client, app)
    assert client.post("/logout", headers=bearer(token)).status_code == 204
    assert_problem(client.get("/me", headers=bearer(token)), 401, "token_revoked")


def _segments(token: str) -> list[str]:
    return token.split(".")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_changed_claims_with_the_cached_signature_are_refused(app, client):
    token = _cached_access_token(client, app)
    header, payload, signature = _segments(token)
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    for change in ({"roles": ["admin"]}, {"exp": claims["exp"] + 3600}, {"sub": "someone-else"}):
        forged = f"{header}.{_b64(json.dumps({**claims, **change}).encode())}.{signature}"
        assert_problem(client.get("/me", headers=bearer(forged)), 401, "invalid_token")
        assert forged not in _cache(app)


def test_another_signature_for_the_cached_claims_is_refused(app, client):
    token = _cached_access_token(client, app)
    header, payload, signature = _segments(token)
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[10] ^= 0x01
    forged = f"{header}.{payload}.{_b64(bytes(raw))}"
    assert_problem(client.get("/me", headers=bearer(forged)), 401, "invalid_token")


def test_cookie_requests_still_need_the_csrf_value_after_a_cached_get(make_app):
    app = make_app(AUTHSVC_TOKEN_LOCATION="headers,cookies", AUTHSVC_CORS_ORIGINS=ORIGIN)
    client = app.test_client()
    signup(client)
    assert client.get("/me").status_code == 200  # the access cookie, now cached
    assert_problem(client.post("/logout"), 401, "invalid_csrf")
    csrf = {"X-CSRF-TOKEN": client.get_cookie("csrf_access_token").value}
    assert client.post("/logout", headers=csrf).status_code == 204


# -- the cache itself ------------------------------------------------------------------------


def _claims(now: float, **changes: int) -> dict:
    return {"exp": int(now) + 60, "nbf": int(now), "iat": int(now), "jti": "j", **changes}


def test_entry_whose_key_is_gone_is_dropped():
    cache = VerifiedTokens()
    cache.put("t", "kid-1", _claims(time.time()))
    assert cache.get("t", leeway=0, key_published=lambda kid: kid == "kid-1") is not None
    assert cache.get("t", leeway=0, key_published=lambda kid: False) is None
    assert len(cache) == 0


def test_time_claims_are_checked_like_pyjwt_on_every_hit():
    now = time.time()
    published = {"key_published": lambda kid: True}
    cases = {
        "expired": (_claims(now, exp=int(now) - 5), 0, False),
        "expired within the leeway": (_claims(now, exp=int(now) - 5), 10, True),
        "not yet valid (nbf)": (_claims(now, nbf=int(now) + 30), 10, False),
        "nbf within the leeway": (_claims(now, nbf=int(now) + 5), 10, True),
        "issued in the future": (_claims(now, iat=int(now) + 30), 10, False),
    }
    for name, (claims, leeway, served) in cases.items():
        cache = VerifiedTokens()
        cache.put("t", "kid", claims)
        assert (cache.get("t", leeway=leeway, **published) is not None) == served, name


def test_capacity_evicts_the_least_recently_used():
    cache = VerifiedTokens(capacity=3)
    now = time.time()
    for token in ("a", "b", "c"):
        cache.put(token, "kid", _claims(now))
    assert cache.get("a", leeway=0, key_published=lambda kid: True) is not None  # a is recent
    cache.put("d", "kid", _claims(now))
    assert len(cache) == 3
    assert cache.tokens() == ["c", "a", "d"]  # b evicted; a moved up by its hit


def test_callers_cannot_change_the_cached_claims():
    cache = VerifiedTokens()
    cache.put("t", "kid", _claims(time.time()))
    served = cache.get("t", leeway=0, key_published=lambda kid: True)
    served["roles"] = ["admin"]
    assert "roles" not in cache.get("t", leeway=0, key_published=lambda kid: True)
