"""POST /signup, /login, /refresh, /logout: the token response and the account rules."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime

import pytest
from sqlalchemy import select, update

from authsvc.extensions import db
from authsvc.models import Session, User, utcnow
from authsvc.runtime import runtime
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


def assert_token_response(body, username):
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    user = body["user"]
    assert set(user) == {"id", "username", "roles", "created_at", "email", "email_verified"}
    assert user["username"] == username
    assert user["roles"] == []
    uuid.UUID(user["id"])
    assert datetime.fromisoformat(user["created_at"]).tzinfo is not None


# -- signup --------------------------------------------------------------------------------------


def test_signup_returns_tokens_and_user(client):
    response = client.post("/signup", json={"username": "Alice", "password": PASSWORD})
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert_token_response(body, "alice")
    assert "password" not in response.get_data(as_text=True)
    claims = claims_of(body["access_token"])
    assert claims["sub"] == body["user"]["id"]


def test_signup_normalises_the_username(client):
    body = signup(client, username="  ＡＬＩＣＥ@Example.COM ")
    assert body["user"]["username"] == "alice@example.com"


@pytest.mark.parametrize("variant", ["alice", "ALICE", " Alice ", "ａｌｉｃｅ"])
def test_username_uniqueness_is_on_the_normalised_form(client, variant):
    signup(client, username="alice")
    response = client.post("/signup", json={"username": variant, "password": PASSWORD})
    assert_problem(response, 409, "username_taken")


@pytest.mark.parametrize(
    "username",
    [
        "ab",
        "a" * 255,
        "al ice",
        "alice/bob",
        "<script>",
        "ali\u200bce",
        "ali\u202ece",
        "bob\x00",
        "ok\n",
    ],
)
def test_signup_rejects_bad_usernames(client, username):
    response = client.post("/signup", json={"username": username, "password": PASSWORD})
    assert_problem(response, 400, "invalid_username")


@pytest.mark.parametrize(
    "password",
    [
        "short",
        "elevenchars",
        "p" * 129,
        "cookiemonster",
        "CookieMonster",
        "1234567890qwerty",
        "alice.smith",
    ],
)
def test_signup_rejects_weak_passwords(client, password):
    response = client.post("/signup", json={"username": "alice.smith", "password": password})
    assert_problem(response, 400, "weak_password")


def test_signup_password_length_is_configurable(make_app):
    app = make_app(AUTHSVC_PASSWORD_MIN_LENGTH="20")
    client = app.test_client()
    response = client.post("/signup", json={"username": "alice", "password": "x9" * 8})
    assert_problem(response, 400, "weak_password")
    assert "20" in response.get_json()["detail"]


def test_parallel_signups_of_one_name_give_one_account(app, backend):
    """Concurrent signups of one normalised name (16 on SQLite, 50 on PostgreSQL): exactly one
    201, the rest 409."""
    parallel = 50 if backend == "postgres" else 16
    statuses: list[int] = []
    barrier = threading.Barrier(parallel)

    def attempt(index: int) -> None:
        client = app.test_client()
        barrier.wait(timeout=10)
        name = "Race" if index % 2 else " race "
        response = client.post("/signup", json={"username": name, "password": PASSWORD})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [201] + [409] * (parallel - 1)
    with app.app_context():
        assert db.session.query(User).filter_by(username="race").count() == 1


# -- login ---------------------------------------------------------------------------------------


def test_login_returns_a_new_session(client):
    first = signup(client)
    body = login(client, username="ALICE")
    assert_token_response(body, "alice")
    assert claims_of(body["access_token"])["sid"] != claims_of(first["access_token"])["sid"]
    assert claims_of(body["access_token"])["fresh"] is True


def failed_login(client, username, password):
    return client.post("/login", json={"username": username, "password": password})


def test_login_failures_are_indistinguishable(app, client):
    signup(client, username="alice")
    signup(client, username="disabled")
    with app.app_context():
        db.session.execute(
            update(User).where(User.username == "disabled").values(disabled_at=utcnow())
        )
        db.session.commit()
    responses = [
        failed_login(client, "nobody", PASSWORD),  # unknown user
        failed_login(client, "alice", OTHER_PASSWORD),  # wrong password
        failed_login(client, "disabled", PASSWORD),  # disabled, right password
        failed_login(client, "not a valid/username", PASSWORD),  # breaks signup rules
    ]
    bodies = [r.get_data() for r in responses]
    for response in responses:
        assert_problem(response, 401, "invalid_credentials")
    assert len(set(bodies)) == 1
    header_sets = [
        sorted((k, v) for k, v in r.headers.items() if k not in {"X-Request-Id"}) for r in responses
    ]
    assert all(headers == header_sets[0] for headers in header_sets)


def test_unknown_user_login_spends_a_hash(app, client):
    """The dummy verification runs for unknown users (so timing matches a wrong password)."""
    with app.app_context():
        hasher = runtime().hasher
        calls = []
        original = hasher.dummy_verify
        hasher.dummy_verify = lambda password: (calls.append(1), original(password))  # type: ignore[method-assign]
        try:
            assert_problem(failed_login(client, "ghost", PASSWORD), 401, "invalid_credentials")
        finally:
            hasher.dummy_verify = original  # type: ignore[method-assign]
    assert calls == [1]


def test_login_rehashes_when_parameters_change(make_app):
    old = make_app(AUTHSVC_ARGON2_MEMORY_KIB="64")
    signup(old.test_client())
    new = make_app(AUTHSVC_ARGON2_MEMORY_KIB="128")
    login(new.test_client())
    with new.app_context():
        stored = db.session.scalar(select(User.password_hash))
    assert "m=128," in stored
    login(new.test_client())  # still logs in with the upgraded hash


def test_login_upgrades_legacy_bcrypt_hash(app, client):
    import bcrypt

    signup(client)
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    with app.app_context():
        db.session.execute(update(User).values(password_hash=legacy))
        db.session.commit()
    login(client)
    with app.app_context():
        assert db.session.scalar(select(User.password_hash)).startswith("$argon2id$")


# -- refresh -------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["header", "json"])
def test_refresh_rotates_the_pair(client, where):
    first = signup(client)
    if where == "header":
        response = client.post("/refresh", headers=bearer(first["refresh_token"]))
    else:
        response = client.post("/refresh", json={"refresh_token": first["refresh_token"]})
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert_token_response(body, "alice")
    old, new = claims_of(first["refresh_token"]), claims_of(body["refresh_token"])
    assert new["sid"] == old["sid"]
    assert new["gen"] == old["gen"] + 1
    assert claims_of(body["access_token"])["fresh"] is False
    assert client.get("/me", headers=bearer(body["access_token"])).status_code == 200


def test_refresh_without_token_is_401_without_error_param(client):
    response = client.post("/refresh")
    assert_problem(response, 401, "missing_token")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'


def test_refresh_after_logout_is_revoked(client):
    tokens = signup(client)
    assert client.post("/logout", headers=bearer(tokens["access_token"])).status_code == 204
    assert_invalid_token(
        client.post("/refresh", headers=bearer(tokens["refresh_token"])), "token_revoked"
    )


def test_refresh_of_disabled_user_is_refused_at_once(app, client):
    tokens = signup(client)
    with app.app_context():
        db.session.execute(update(User).values(disabled_at=utcnow()))
        db.session.commit()
    assert_invalid_token(
        client.post("/refresh", headers=bearer(tokens["refresh_token"])), "token_revoked"
    )
    assert_invalid_token(client.get("/me", headers=bearer(tokens["access_token"])), "token_revoked")


def test_refresh_token_never_outlives_the_session(make_app):
    app = make_app(AUTHSVC_SESSION_MAX_AGE="3600", AUTHSVC_REFRESH_TOKEN_TTL="3600")
    client = app.test_client()
    tokens = signup(client)
    with app.app_context():
        session = db.session.scalar(select(Session))
        cap = session.expires_at.timestamp()
    refreshed = client.post("/refresh", headers=bearer(tokens["refresh_token"])).get_json()
    assert claims_of(refreshed["refresh_token"])["exp"] <= cap + 1


def test_refresh_of_expired_session_is_refused(app, client):
    tokens = signup(client)
    with app.app_context():
        db.session.execute(update(Session).values(expires_at=utcnow()))
        db.session.commit()
    assert_invalid_token(
        client.post("/refresh", headers=bearer(tokens["refresh_token"])), "token_revoked"
    )


# -- logout --------------------------------------------------------------------------------------


def three_sessions(client):
    signup(client)
    return [login(client) for _ in range(3)]


def status_of(client, tokens):
    return [client.get("/me", headers=bearer(t["access_token"])).status_code for t in tokens]


def refresh_status(client, tokens):
    return [client.post("/refresh", headers=bearer(t["refresh_token"])).status_code for t in tokens]


def test_logout_local_revokes_only_this_session(client):
    sessions = three_sessions(client)
    response = client.post("/logout", headers=bearer(sessions[0]["access_token"]))
    assert response.status_code == 204
    assert response.data == b""
    assert status_of(client, sessions) == [401, 200, 200]
    assert refresh_status(client, sessions) == [401, 200, 200]


def test_logout_global_revokes_every_session(client):
    sessions = three_sessions(client)
    response = client.post(
        "/logout", json={"scope": "global"}, headers=bearer(sessions[1]["access_token"])
    )
    assert response.status_code == 204
    assert status_of(client, sessions) == [401, 401, 401]
    assert refresh_status(client, sessions) == [401, 401, 401]


def test_logout_others_keeps_only_this_session(client):
    sessions = three_sessions(client)
    response = client.post(
        "/logout", json={"scope": "others"}, headers=bearer(sessions[2]["access_token"])
    )
    assert response.status_code == 204
    assert status_of(client, sessions) == [401, 401, 200]


def test_logout_with_refresh_token(client):
    tokens = signup(client)
    assert client.post("/logout", headers=bearer(tokens["refresh_token"])).status_code == 204
    assert_invalid_token(client.get("/me", headers=bearer(tokens["access_token"])), "token_revoked")


def test_logout_does_not_affect_other_users(client):
    alice = signup(client, username="alice")
    bob = signup(client, username="bob")
    client.post("/logout", json={"scope": "global"}, headers=bearer(alice["access_token"]))
    assert client.get("/me", headers=bearer(bob["access_token"])).status_code == 200


def test_logout_twice_is_401(client):
    tokens = signup(client)
    client.post("/logout", headers=bearer(tokens["access_token"]))
    assert_invalid_token(
        client.post("/logout", headers=bearer(tokens["access_token"])), "token_revoked"
    )


def test_client_details_are_sanitised_before_storage(make_app):
    """User-Agent and forwarded addresses are client-controlled: control characters (PostgreSQL
    refuses NUL in text) are dropped and lengths bounded, never a 500."""
    client = make_app(AUTHSVC_TRUSTED_PROXIES="1").test_client()
    response = client.post(
        "/signup",
        json={"username": "alice", "password": PASSWORD},
        headers={"User-Agent": "agent\x00\x07/1.0", "X-Forwarded-For": "x" * 300},
    )
    assert response.status_code == 201, response.get_json()
    sessions = client.get("/sessions", headers=bearer(response.get_json()["access_token"]))
    [session] = sessions.get_json()["sessions"]
    assert session["user_agent"] == "agent/1.0"
    assert session["ip"] == "x" * 64
