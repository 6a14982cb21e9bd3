"""GET /me, POST /password, GET /sessions, DELETE /sessions/{id}."""

from __future__ import annotations

import uuid
from datetime import datetime

from tests.support.helpers import (
    OTHER_PASSWORD,
    PASSWORD,
    assert_invalid_token,
    assert_problem,
    bearer,
    claims_of,
    login,
    signup,
)


def test_me_returns_the_user(client):
    tokens = signup(client, username="Alice")
    response = client.get("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.get_json() == tokens["user"]


def test_me_without_token(client):
    response = client.get("/me")
    assert_problem(response, 401, "missing_token")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'


def test_me_with_non_bearer_authorization_is_missing_token(client):
    response = client.get("/me", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert_problem(response, 401, "missing_token")


def test_expired_access_token(make_app):
    app = make_app(AUTHSVC_ACCESS_TOKEN_TTL="1", AUTHSVC_LEEWAY="0")
    client = app.test_client()
    tokens = signup(client)
    import time

    time.sleep(2.1)
    response = client.get("/me", headers=bearer(tokens["access_token"]))
    assert_invalid_token(response)
    assert "expired" in response.get_json()["detail"]


# -- password ------------------------------------------------------------------------------------


def change_password(client, token, current=PASSWORD, new=OTHER_PASSWORD):
    return client.post(
        "/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(token),
    )


def test_password_change_revokes_every_other_session(client):
    first = signup(client)
    second = login(client)
    third = login(client)
    response = change_password(client, second["access_token"])
    assert response.status_code == 204
    assert client.get("/me", headers=bearer(second["access_token"])).status_code == 200
    assert client.post("/refresh", headers=bearer(second["refresh_token"])).status_code == 200
    for other in (first, third):
        assert_invalid_token(
            client.get("/me", headers=bearer(other["access_token"])), "token_revoked"
        )
        assert_invalid_token(
            client.post("/refresh", headers=bearer(other["refresh_token"])), "token_revoked"
        )
    # The new password works, the old one no longer does.
    login(client, password=OTHER_PASSWORD)
    assert_problem(
        client.post("/login", json={"username": "alice", "password": PASSWORD}),
        401,
        "invalid_credentials",
    )


def test_password_change_with_wrong_current_password_is_401(client):
    tokens = signup(client)
    response = change_password(client, tokens["access_token"], current="not the password at all")
    assert_problem(response, 401, "invalid_credentials")
    login(client)  # unchanged


def test_password_change_enforces_the_policy(client):
    tokens = signup(client)
    response = change_password(client, tokens["access_token"], new="short")
    assert_problem(response, 400, "weak_password")
    response = change_password(client, tokens["access_token"], new="cookiemonster")
    assert_problem(response, 400, "weak_password")


def test_password_change_needs_an_access_token(client):
    tokens = signup(client)
    assert_invalid_token(change_password(client, tokens["refresh_token"]))
    assert_problem(
        client.post(
            "/password", json={"current_password": PASSWORD, "new_password": OTHER_PASSWORD}
        ),
        401,
        "missing_token",
    )


# -- sessions ------------------------------------------------------------------------------------


def test_sessions_lists_live_sessions_with_current_marked(client):
    first = signup(client, headers={"User-Agent": "phone/1.0"})
    second = login(client, headers={"User-Agent": "laptop/2.0"})
    response = client.get("/sessions", headers=bearer(second["access_token"]))
    assert response.status_code == 200
    sessions = response.get_json()["sessions"]
    assert len(sessions) == 2
    by_id = {s["id"]: s for s in sessions}
    current = by_id[claims_of(second["access_token"])["sid"]]
    other = by_id[claims_of(first["access_token"])["sid"]]
    assert current["current"] is True and other["current"] is False
    assert current["user_agent"] == "laptop/2.0" and other["user_agent"] == "phone/1.0"
    for session in sessions:
        assert set(session) == {
            "id",
            "created_at",
            "last_used_at",
            "expires_at",
            "user_agent",
            "ip",
            "current",
        }
        assert session["ip"] == "127.0.0.1"
        created = datetime.fromisoformat(session["created_at"])
        assert created <= datetime.fromisoformat(session["last_used_at"])
        assert datetime.fromisoformat(session["expires_at"]) > created


def test_sessions_hides_revoked_sessions_and_other_users(client):
    alice = signup(client, username="alice")
    gone = login(client, username="alice")
    signup(client, username="bob")
    client.post("/logout", headers=bearer(gone["access_token"]))
    sessions = client.get("/sessions", headers=bearer(alice["access_token"])).get_json()["sessions"]
    assert [s["id"] for s in sessions] == [claims_of(alice["access_token"])["sid"]]


def test_delete_session_revokes_it(client):
    keep = signup(client)
    drop = login(client)
    sid = claims_of(drop["access_token"])["sid"]
    response = client.delete(f"/sessions/{sid}", headers=bearer(keep["access_token"]))
    assert response.status_code == 204
    assert_invalid_token(client.get("/me", headers=bearer(drop["access_token"])), "token_revoked")
    assert_invalid_token(
        client.post("/refresh", headers=bearer(drop["refresh_token"])), "token_revoked"
    )
    assert client.get("/me", headers=bearer(keep["access_token"])).status_code == 200


def test_delete_someone_elses_session_is_404_and_harmless(client):
    alice = signup(client, username="alice")
    bob = signup(client, username="bob")
    bob_sid = claims_of(bob["access_token"])["sid"]
    response = client.delete(f"/sessions/{bob_sid}", headers=bearer(alice["access_token"]))
    assert_problem(response, 404, "not_found")
    assert client.get("/me", headers=bearer(bob["access_token"])).status_code == 200


def test_delete_unknown_session_is_404(client):
    tokens = signup(client)
    response = client.delete(f"/sessions/{uuid.uuid4()}", headers=bearer(tokens["access_token"]))
    assert_problem(response, 404, "not_found")


def test_delete_current_session_logs_out(client):
    tokens = signup(client)
    sid = claims_of(tokens["access_token"])["sid"]
    assert (
        client.delete(f"/sessions/{sid}", headers=bearer(tokens["access_token"])).status_code == 204
    )
    assert_invalid_token(client.get("/me", headers=bearer(tokens["access_token"])), "token_revoked")
