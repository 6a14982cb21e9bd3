"""DESIGN §6 cookie mode: httpOnly cookies, double-submit CSRF, CORS allow-list."""

from __future__ import annotations

import pytest

from tests.support.helpers import OTHER_PASSWORD, PASSWORD, assert_problem, bearer, signup

ORIGIN = "https://app.example.com"
COOKIES = {"access_token_cookie", "refresh_token_cookie", "csrf_access_token", "csrf_refresh_token"}


@pytest.fixture
def app(make_app):
    return make_app(AUTHSVC_TOKEN_LOCATION="headers,cookies", AUTHSVC_CORS_ORIGINS=ORIGIN)


def set_cookies(response) -> dict[str, str]:
    """Set-Cookie headers by cookie name (the refresh cookie's two copies joined)."""
    found: dict[str, str] = {}
    for header in response.headers.getlist("Set-Cookie"):
        name = header.split("=", 1)[0]
        found[name] = f"{found[name]}\n{header}" if name in found else header
    return found


def refresh_paths(response) -> list[str]:
    return sorted(
        part.strip().removeprefix("Path=")
        for header in response.headers.getlist("Set-Cookie")
        if header.startswith("refresh_token_cookie=")
        for part in header.split(";")
        if part.strip().startswith("Path=")
    )


def csrf(client, name="csrf_access_token") -> dict[str, str]:
    return {"X-CSRF-TOKEN": client.get_cookie(name).value}


def test_signup_sets_httponly_cookies(client):
    response = client.post("/signup", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 201
    cookies = set_cookies(response)
    assert set(cookies) == COOKIES
    access, refresh = cookies["access_token_cookie"], cookies["refresh_token_cookie"]
    for header in (access, refresh):
        assert "HttpOnly" in header and "Secure" in header and "SameSite=Lax" in header
    assert "Path=/;" in access or access.endswith("Path=/")
    # The long-lived refresh token travels to /refresh and /logout only.
    assert refresh_paths(response) == ["/logout", "/refresh"]
    assert "Max-Age=900" in access
    for name in ("csrf_access_token", "csrf_refresh_token"):
        assert "HttpOnly" not in cookies[name]  # the page must read it to send X-CSRF-TOKEN
    # Header-mode clients still get the tokens in the body.
    assert {"access_token", "refresh_token"} <= set(response.get_json())


def test_development_cookies_are_not_secure(make_app):
    client = make_app(
        AUTHSVC_ENV="development", AUTHSVC_TOKEN_LOCATION="headers,cookies"
    ).test_client()
    response = client.post("/signup", json={"username": "alice", "password": PASSWORD})
    assert "Secure" not in set_cookies(response)["access_token_cookie"]


def test_header_mode_sets_no_cookies(make_app):
    client = make_app().test_client()
    response = client.post("/signup", json={"username": "alice", "password": PASSWORD})
    assert response.headers.getlist("Set-Cookie") == []


def test_me_with_the_cookie_alone(client):
    signup(client)
    response = client.get("/me")
    assert response.status_code == 200
    assert response.get_json()["username"] == "alice"


@pytest.mark.parametrize("header", [None, "wrong", "refresh"])
def test_state_changing_request_without_matching_csrf_is_refused(client, header):
    signup(client)
    headers = {}
    if header == "wrong":
        headers["X-CSRF-TOKEN"] = "not-the-token"
    elif header == "refresh":
        headers.update(csrf(client, "csrf_refresh_token"))
    response = client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": OTHER_PASSWORD},
        headers=headers,
    )
    assert_problem(response, 401, "invalid_csrf")
    assert client.get("/me").status_code == 200  # nothing happened


def test_state_changing_request_with_csrf_header_works(client):
    signup(client)
    response = client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": OTHER_PASSWORD},
        headers=csrf(client),
    )
    assert response.status_code == 204


def test_silent_refresh_with_the_cookie(client):
    signup(client)
    old_access = client.get_cookie("access_token_cookie").value
    refused = client.post("/refresh")
    assert_problem(refused, 401, "invalid_csrf")
    response = client.post("/refresh", headers=csrf(client, "csrf_refresh_token"))
    assert response.status_code == 200
    body = response.get_json()
    # Refreshed through the cookie: the new tokens are in cookies only, never handed to scripts.
    assert "access_token" not in body and "refresh_token" not in body
    assert body["expires_in"] == 900 and body["user"]["username"] == "alice"
    assert set(set_cookies(response)) == COOKIES
    assert client.get_cookie("access_token_cookie").value != old_access
    assert client.get("/me").status_code == 200


def test_logout_from_the_access_cookie_clears_every_cookie(client):
    signup(client)
    assert_problem(client.post("/logout"), 401, "invalid_csrf")
    response = client.post("/logout", headers=csrf(client))
    assert response.status_code == 204
    cleared = set_cookies(response)
    assert set(cleared) == COOKIES
    assert refresh_paths(response) == ["/logout", "/refresh"]
    for header in response.headers.getlist("Set-Cookie"):
        assert "Max-Age=0" in header or "Expires=Thu, 01 Jan 1970" in header, header
    assert client.get("/me").status_code == 401


def test_logout_after_the_access_cookie_expired_uses_the_refresh_cookie(client):
    tokens = signup(client)
    client.delete_cookie("access_token_cookie")  # what the browser does at its max-age
    assert_problem(client.post("/logout", headers=csrf(client)), 401, "invalid_csrf")
    response = client.post("/logout", headers=csrf(client, "csrf_refresh_token"))
    assert response.status_code == 204
    assert client.post("/refresh", headers=bearer(tokens["refresh_token"])).status_code == 401


def test_logged_out_cookie_is_revoked_even_if_replayed(client):
    signup(client)
    access = client.get_cookie("access_token_cookie").value
    client.post("/logout", headers=csrf(client))
    client.set_cookie("access_token_cookie", access)
    response = client.get("/me")
    assert_problem(response, 401, "token_revoked")


def test_header_mode_keeps_working_beside_cookies(app):
    client = app.test_client()
    tokens = signup(client)
    other = app.test_client()  # no cookies at all
    assert other.get("/me", headers=bearer(tokens["access_token"])).status_code == 200
    response = other.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": OTHER_PASSWORD},
        headers=bearer(tokens["access_token"]),
    )
    assert (
        response.status_code == 204
    )  # no CSRF needed: a header is never sent by a browser on its own


# -- CORS ----------------------------------------------------------------------------------------


def preflight(client, origin, path="/login", method="POST"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "content-type,x-csrf-token",
        },
    )


def test_preflight_for_an_allowed_origin(client):
    response = preflight(client, ORIGIN)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "x-csrf-token" in allowed and "content-type" in allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "https://app.example.com.evil.net", "null"]
)
def test_no_cors_headers_for_other_origins(client, origin):
    for response in (preflight(client, origin), client.get("/me", headers={"Origin": origin})):
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Credentials" not in response.headers


def test_actual_request_from_allowed_origin_exposes_headers(client):
    response = client.post(
        "/login", json={"username": "nobody", "password": PASSWORD}, headers={"Origin": ORIGIN}
    )
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Request-Id" in response.headers["Access-Control-Expose-Headers"]


def test_no_cors_without_configured_origins(make_app):
    client = make_app().test_client()
    response = preflight(client, ORIGIN)
    assert "Access-Control-Allow-Origin" not in response.headers
