"""Self-service (DESIGN §11): DELETE /me erases the account and everything that names it (the
audit rows keep the id alone), GET /me/export shows everything it holds but no secret, and
the refusals and throttling in between. On SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, inspect, select, text

from authsvc.extensions import db
from authsvc.models import AuditEvent, OutboxMessage, RecoveryCode, User
from tests.support.admin import create_user, make_admin
from tests.support.helpers import (
    OTHER_PASSWORD,
    PASSWORD,
    assert_invalid_token,
    assert_problem,
    bearer,
    login,
    signup,
)
from tests.support.mfa import Clock, enrol_totp, mfa_token
from tests.support.settings import TABLES
from tests.support.smtp import MailServer, token_in
from tests.support.webauthn_authenticator import SoftAuthenticator

USERNAME = "zoe.erasable"
ADDRESS = "Zoe.Erasable@example.com"  # as email-validator normalises "...@EXAMPLE.com"
NEW_ADDRESS = "zoe.moved@elsewhere.example"
CLIENT_IP = "198.51.100.23"  # the user's own address: no audit row may keep it


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def delete_me(client: FlaskClient, access: str, **body: Any) -> Any:
    return client.delete("/me", json=body, headers=bearer(access))


def second_step(client: FlaskClient, code: str, username: str = "alice") -> dict[str, Any]:
    response = client.post(
        "/login/mfa", json={"mfa_token": mfa_token(client, username), "code": code}
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def user_count(app: Flask) -> int:
    with app.app_context():
        return int(db.session.scalar(select(func.count()).select_from(User)))


# -- scanning the whole database ----------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    table: str
    column: str
    needle: str
    row: dict[str, Any]


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, uuid.UUID):
        return f"{value} {value.hex}"
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return f"{raw.hex()} {raw.decode('latin-1')}"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def all_tables(app: Flask) -> list[str]:
    with app.app_context():
        return sorted(inspect(db.engine).get_table_names())


def scan(app: Flask, needles: Iterable[str]) -> list[Hit]:
    """Every cell of every table in the schema (not only those in TABLES) holding a needle,
    compared case-insensitively (a uuid as text and as the 32 hex digits SQLite stores)."""
    wanted = [needle.lower() for needle in needles]
    hits = []
    with app.app_context():
        for table in all_tables(app):
            query = text(f'SELECT * FROM "{table}"')  # noqa: S608 (our own table names)
            for row in db.session.execute(query).mappings():
                for column, value in row.items():
                    cell = _as_text(value).lower()
                    hits += [
                        Hit(table, column, needle, dict(row)) for needle in wanted if needle in cell
                    ]
    return hits


def settle_outbox(app: Flask, timeout: float = 10.0) -> None:
    """Wait until the sender has handled every queued message (sent, failed or resolved)."""
    deadline = time.monotonic() + timeout
    with app.app_context():
        while time.monotonic() < deadline:
            queued = db.session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.status == "queued")
            )
            db.session.rollback()
            if queued == 0:
                return
            time.sleep(0.05)
    raise AssertionError("the outbox did not drain")


# -- the erasure --------------------------------------------------------------------------------


def test_deletion_leaves_nothing_of_the_user_but_audit_ids(
    mail_app: Flask, mail_server: MailServer, make_app: Any, clock: Clock
) -> None:
    client = mail_app.test_client()
    client.environ_base["REMOTE_ADDR"] = CLIENT_IP

    # An account with a verified address...
    first = client.post(
        "/signup",
        json={"username": USERNAME, "password": PASSWORD, "email": "Zoe.Erasable@EXAMPLE.com"},
    ).get_json()
    user_id = uuid.UUID(first["user"]["id"])
    assert first["user"]["email"] == ADDRESS
    verify = token_in(mail_server.wait_for(1, to=ADDRESS)[0])
    assert client.post("/email/verify", json={"token": verify}).status_code == 200

    # ...an authenticator app with recovery codes, and a passkey (the first factor raised the
    # signup's session to aal2, which may add another)...
    enrolled = enrol_totp(client, first["access_token"], clock)
    authenticator = SoftAuthenticator()
    options = client.post(
        "/webauthn/register/options",
        json={"current_password": PASSWORD},
        headers=bearer(first["access_token"]),
    ).get_json()
    registered = client.post(
        "/webauthn/register",
        json=authenticator.create(options),
        headers=bearer(first["access_token"]),
    )
    assert registered.status_code == 201, registered.get_json()

    # ...several sessions: password and code, password and recovery code, the passkey alone,
    # and one logged out (a revoked row)...
    clock.advance()
    with_code = second_step(client, clock.code(enrolled.secret), USERNAME)
    with_recovery = second_step(client, enrolled.recovery_codes[0], USERNAME)
    options = client.post("/webauthn/login/options").get_json()
    with_passkey = client.post("/webauthn/login", json=authenticator.get(options))
    assert with_passkey.status_code == 200, with_passkey.get_json()
    logged_out = second_step(client, enrolled.recovery_codes[1], USERNAME)
    assert client.post("/logout", headers=bearer(logged_out["access_token"])).status_code == 204
    pairs = [first, with_code, with_recovery, with_passkey.get_json()]

    # ...a password step waiting for its code (a challenge), a pending reset link, and a
    # pending change of address (one-time tokens, outbox rows to both addresses).
    pending_mfa = mfa_token(client, USERNAME)
    settle_outbox(mail_app)
    notices = len(mail_server.messages(ADDRESS))  # the factor notices sent so far
    assert client.post("/password/forgot", json={"email": ADDRESS}).status_code == 202
    reset = token_in(mail_server.wait_for(notices + 1, to=ADDRESS)[-1])
    change = client.post(
        "/email/change",
        json={"email": NEW_ADDRESS, "current_password": PASSWORD},
        headers=bearer(first["access_token"]),
    )
    assert change.status_code == 202
    confirm = token_in(mail_server.wait_for(1, to=NEW_ADDRESS)[0])
    settle_outbox(mail_app)

    # Another process, whose token cache already holds a verified access token of the user.
    other = make_app().test_client()
    assert other.get("/me", headers=bearer(first["access_token"])).status_code == 200

    # The scan finds the user everywhere first: it would find what the erasure leaves.
    needles = [str(user_id), user_id.hex, USERNAME, ADDRESS, NEW_ADDRESS, CLIENT_IP]
    before = {hit.table for hit in scan(mail_app, needles)}
    assert set(TABLES) - {"signing_keys"} <= before, before
    assert set(TABLES) <= set(all_tables(mail_app))

    clock.advance()
    response = delete_me(
        client, first["access_token"], current_password=PASSWORD, code=clock.code(enrolled.secret)
    )
    assert response.status_code == 204, response.get_json()
    assert response.get_data() == b""

    # Only audit_events may hold the id (as whom a row concerns or who acted); nothing holds
    # the username or an address, and no row naming the user keeps their client address. (A
    # stranger's request for a reset mail names nobody: its address is the requester's, who
    # need not be the user, and it stays.)
    hits = [
        hit
        for hit in scan(mail_app, needles)
        if not (hit.table == "audit_events" and hit.row["user_id"] is None and hit.column == "ip")
    ]
    assert [hit for hit in hits if hit.table != "audit_events"] == []
    assert [hit for hit in hits if hit.needle not in (str(user_id), user_id.hex)] == [], (
        "an audit row keeps the username, an address or the client's address"
    )
    assert {hit.column for hit in hits} <= {"user_id", "actor_id"}, hits
    with mail_app.app_context():
        kept = db.session.execute(
            select(AuditEvent.type, AuditEvent.ip).where(AuditEvent.user_id == user_id)
        ).all()
    assert {"signup", "login", "mfa_enabled", "user_deleted"} <= {row.type for row in kept}
    assert [row for row in kept if row.ip is not None] == []

    # Every old session is refused at once, here and in the other process.
    for pair in pairs:
        assert_invalid_token(
            client.get("/me", headers=bearer(pair["access_token"])), "token_revoked"
        )
        assert client.post("/refresh", headers=bearer(pair["refresh_token"])).status_code == 401
    assert other.get("/me", headers=bearer(first["access_token"])).status_code == 401
    # The password, the passkey, the waiting code step and the mailed links are dead too.
    assert_problem(
        client.post("/login", json={"username": USERNAME, "password": PASSWORD}),
        401,
        "invalid_credentials",
    )
    options = client.post("/webauthn/login/options").get_json()
    assert client.post("/webauthn/login", json=authenticator.get(options)).status_code == 401
    clock.advance()
    answer = client.post(
        "/login/mfa", json={"mfa_token": pending_mfa, "code": clock.code(enrolled.secret)}
    )
    assert answer.status_code == 401
    reset_answer = client.post(
        "/password/reset", json={"token": reset, "new_password": OTHER_PASSWORD}
    )
    assert_problem(reset_answer, 400, "invalid_token")
    assert_problem(client.post("/email/verify", json={"token": confirm}), 400, "invalid_token")

    # The username and the address are free again, for a new account that sees none of it.
    again = client.post(
        "/signup", json={"username": USERNAME, "password": OTHER_PASSWORD, "email": ADDRESS}
    )
    assert again.status_code == 201, again.get_json()
    assert again.get_json()["user"]["id"] != str(user_id)
    export = client.get("/me/export", headers=bearer(again.get_json()["access_token"]))
    assert [event["type"] for event in export.get_json()["events"]] == ["signup"]
    assert len(export.get_json()["sessions"]) == 1


# -- refusals ----------------------------------------------------------------------------------


def test_a_wrong_password_deletes_nothing(app: Flask, client: FlaskClient) -> None:
    tokens = signup(client)
    response = delete_me(client, tokens["access_token"], current_password=OTHER_PASSWORD)
    assert_problem(response, 401, "invalid_credentials")
    assert "WWW-Authenticate" not in response.headers  # the token was fine
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 200
    assert client.post("/refresh", headers=bearer(tokens["refresh_token"])).status_code == 200
    login(client)
    assert user_count(app) == 1


def test_without_a_second_factor_no_code_is_needed(client: FlaskClient) -> None:
    tokens = signup(client)
    response = delete_me(client, tokens["access_token"], current_password=PASSWORD, code=None)
    assert response.status_code == 204, response.get_json()
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 401


def wrong_code(clock: Clock, secret: str) -> str:
    """Six digits the app shows at no step near now."""
    near = {clock.code(secret, offset) for offset in range(-3, 4)}
    return next(code for code in (f"{n:06d}" for n in range(1_000_000)) if code not in near)


def test_an_account_with_a_factor_needs_a_code(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    tokens = signup(client)
    enrolled = enrol_totp(client, tokens["access_token"], clock)
    access = tokens["access_token"]
    assert_problem(delete_me(client, access, current_password=PASSWORD), 401, "code_required")
    bad = wrong_code(clock, enrolled.secret)
    assert_problem(
        delete_me(client, access, current_password=PASSWORD, code=bad), 401, "invalid_code"
    )
    # The password is checked first: a right code with a wrong password is not even looked at.
    clock.advance()
    right = clock.code(enrolled.secret)
    assert_problem(
        delete_me(client, access, current_password=OTHER_PASSWORD, code=right),
        401,
        "invalid_credentials",
    )
    # A recovery code already spent at a login does not work; an unused one does, and is spent.
    second_step(client, enrolled.recovery_codes[0])
    assert_problem(
        delete_me(client, access, current_password=PASSWORD, code=enrolled.recovery_codes[0]),
        401,
        "invalid_code",
    )
    assert client.get("/me", headers=bearer(access)).status_code == 200
    assert user_count(app) == 1
    with app.app_context():
        unused = db.session.scalar(
            select(func.count()).select_from(RecoveryCode).where(RecoveryCode.used_at.is_(None))
        )
    assert unused == 9
    response = delete_me(
        client, access, current_password=PASSWORD, code=enrolled.recovery_codes[1].upper()
    )
    assert response.status_code == 204, response.get_json()
    assert user_count(app) == 0
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(RecoveryCode)) == 0


def test_the_last_admin_cannot_delete_itself(
    app: Flask, client: FlaskClient, runner: Any, clock: Clock
) -> None:
    admin = make_admin(client, runner, clock)
    body = {"current_password": PASSWORD, "code": admin.totp.recovery_codes[0]}
    assert_problem(delete_me(client, admin.access_token, **body), 409, "last_admin")
    # A disabled admin is no admin to leave in charge.
    create_user(runner, "second", "admin")
    assert runner.invoke(args=["users", "disable", "second"]).exit_code == 0
    assert_problem(delete_me(client, admin.access_token, **body), 409, "last_admin")
    assert client.get("/me", headers=bearer(admin.access_token)).status_code == 200
    # The refusals spent nothing: the same recovery code works once another admin is active.
    create_user(runner, "third", "admin")
    response = delete_me(client, admin.access_token, **body)
    assert response.status_code == 204, response.get_json()
    assert client.get("/me", headers=bearer(admin.access_token)).status_code == 401
    assert user_count(app) == 2


def test_deletion_needs_an_access_token(client: FlaskClient) -> None:
    tokens = signup(client)
    response = client.delete("/me", json={"current_password": PASSWORD})
    assert_problem(response, 401, "missing_token")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'
    assert_invalid_token(
        client.delete("/me", json={"current_password": PASSWORD}, headers=bearer("junk"))
    )
    # The refresh token is not an access token.
    refresh = client.delete(
        "/me", json={"current_password": PASSWORD}, headers=bearer(tokens["refresh_token"])
    )
    assert refresh.status_code == 401
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"current_password": PASSWORD, "extra": 1},
        {"current_password": PASSWORD, "code": None, "confirm": True},
        {},
        {"code": "123456"},
        {"current_password": 12345},
        {"current_password": PASSWORD, "code": 123456},
        ["current_password"],
    ],
    ids=[
        "unknown-field",
        "unknown-field-with-code",
        "empty",
        "no-password",
        "int-password",
        "int-code",
        "array",
    ],
)
def test_a_malformed_body_is_400_and_deletes_nothing(
    app: Flask, client: FlaskClient, body: Any
) -> None:
    tokens = signup(client)
    response = client.delete("/me", json=body, headers=bearer(tokens["access_token"]))
    assert_problem(response, 400, "invalid_request")
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 200
    assert user_count(app) == 1


def test_a_body_that_is_not_json_is_415(client: FlaskClient) -> None:
    tokens = signup(client)
    response = client.delete(
        "/me", data="current_password=x", headers=bearer(tokens["access_token"])
    )
    assert response.status_code == 415
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 200


# -- the export ---------------------------------------------------------------------------------


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


def test_export_shows_the_account_and_no_secret(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    first = signup(client)
    user_id = first["user"]["id"]
    enrolled = enrol_totp(client, first["access_token"], clock)
    clock.advance()
    second = second_step(client, clock.code(enrolled.secret))
    third = second_step(client, enrolled.recovery_codes[0])
    assert client.post("/logout", headers=bearer(third["access_token"])).status_code == 204
    pending = mfa_token(client)
    # Someone else's rows are not part of it.
    bob = signup(client, "bob")
    login(client, "bob")

    access = bearer(second["access_token"])
    response = client.get("/me/export", headers=access)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert "no-store" in response.headers["Cache-Control"]
    export = response.get_json()
    assert set(export) == {"user", "sessions", "factors", "events"}

    me = client.get("/me", headers=access).get_json()
    assert export["user"] == {**me, "disabled": False}
    listed = client.get("/sessions", headers=access).get_json()["sessions"]
    assert sorted(session["id"] for session in export["sessions"]) == sorted(
        session["id"] for session in listed
    )
    assert len(listed) == 2  # the signup's and the code's: the logged-out one is not live
    by_id = {session["id"]: session for session in listed}
    for session in export["sessions"]:
        shown = {key: value for key, value in by_id[session["id"]].items() if key != "current"}
        assert session == shown
    assert [(factor["id"], factor["type"]) for factor in export["factors"]] == [
        (enrolled.factor_id, "totp")
    ]
    assert set(export["factors"][0]) == {"id", "type", "created_at", "last_used_at"}

    events = export["events"]
    assert {event["user_id"] for event in events} == {user_id}
    types = [event["type"] for event in events]
    assert {"signup", "login", "mfa_enabled", "recovery_code_used"} <= set(types)
    assert types[-1] == "signup"  # newest first
    assert [event["at"] for event in events] == sorted((e["at"] for e in events), reverse=True)
    assert bob["user"]["id"] not in response.get_data(as_text=True)

    # No hash, no secret, no token anywhere in the body.
    with app.app_context():
        password_hash = db.session.scalar(
            select(User.password_hash).where(User.username == "alice")
        )
    body = response.get_data(as_text=True)
    secrets = [
        password_hash,
        enrolled.secret,
        pending,
        *enrolled.recovery_codes,
        *(
            pair[kind]
            for pair in (first, second, third)
            for kind in ("access_token", "refresh_token")
        ),
    ]
    assert [secret for secret in secrets if secret in body] == []
    assert not _keys(export) & {
        "password_hash",
        "password",
        "secret",
        "secret_encrypted",
        "code_hash",
        "token_hash",
        "public_key",
        "access_token",
        "refresh_token",
    }
    assert "$argon2" not in body


def test_export_of_a_fresh_account(client: FlaskClient) -> None:
    tokens = signup(client)
    export = client.get("/me/export", headers=bearer(tokens["access_token"])).get_json()
    assert export["factors"] == []
    assert [event["type"] for event in export["events"]] == ["signup"]
    assert export["events"][0]["ip"] == "127.0.0.1"
    assert [session["id"] for session in export["sessions"]] == [
        session["id"]
        for session in client.get("/sessions", headers=bearer(tokens["access_token"])).get_json()[
            "sessions"
        ]
    ]


def test_export_needs_an_access_token(client: FlaskClient) -> None:
    tokens = signup(client)
    response = client.get("/me/export")
    assert_problem(response, 401, "missing_token")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'
    assert_invalid_token(client.get("/me/export", headers=bearer("junk")))
    assert client.get("/me/export", headers=bearer(tokens["refresh_token"])).status_code == 401
    client.post("/logout", headers=bearer(tokens["access_token"]))
    assert client.get("/me/export", headers=bearer(tokens["access_token"])).status_code == 401


# -- throttling ---------------------------------------------------------------------------------


def test_wrong_passwords_at_delete_are_throttled_per_user(make_app: Any) -> None:
    app = make_app(AUTHSVC_RATELIMIT_ENABLED="true")
    client = app.test_client()
    tokens = signup(client)
    bob = signup(client, "bob")
    access = tokens["access_token"]
    statuses = []
    for _ in range(30):
        response = delete_me(client, access, current_password=OTHER_PASSWORD)
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {401} and len(statuses) > 3
    assert_problem(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) > 0
    # While throttled the right password is refused too (the guess is never checked)...
    assert_problem(delete_me(client, access, current_password=PASSWORD), 429, "rate_limited")
    assert client.get("/me", headers=bearer(access)).status_code == 200
    # ...for this user only (from another address: the address has its own limit, below).
    elsewhere = {"REMOTE_ADDR": "198.51.100.7"}

    def delete_bob(password):
        return client.delete(
            "/me",
            json={"current_password": password},
            headers=bearer(bob["access_token"]),
            environ_overrides=elsewhere,
        )

    assert_problem(delete_bob(OTHER_PASSWORD), 401, "invalid_credentials")
    assert delete_bob(PASSWORD).status_code == 204


def test_wrong_passwords_at_delete_are_throttled_per_address(make_app: Any) -> None:
    """Many accounts guessed from one address: the address's limit stops it, as at /password."""
    app = make_app(AUTHSVC_RATELIMIT_ENABLED="true")
    client = app.test_client()
    accounts = [signup(client, f"user{number}")["access_token"] for number in range(4)]
    statuses = [
        delete_me(client, access, current_password=OTHER_PASSWORD).status_code
        for access in accounts
        for _ in range(4)
    ]
    assert 429 in statuses, statuses
    assert statuses.count(401) <= 10  # AUTHSVC_RATELIMIT_PASSWORD_ADDRESS: 10/minute


def test_deletion_takes_the_mail_queued_to_an_international_address(make_app):
    # No mail server: the verification mail stays queued, to the domain in punycode.
    app = make_app(AUTHSVC_MAIL_BACKEND="none")
    client = app.test_client()
    body = {"username": "bjorn", "password": PASSWORD, "email": "bjorn@bücher.example"}
    tokens = client.post("/signup", json=body).get_json()
    with app.app_context():
        recipients = db.session.scalars(select(OutboxMessage.recipient)).all()
        db.session.rollback()
    assert recipients == ["bjorn@xn--bcher-kva.example"]
    assert delete_me(client, tokens["access_token"], current_password=PASSWORD).status_code == 204
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_the_export_does_not_say_which_admin_acted_nor_from_where(client, runner, monkeypatch):
    root = make_admin(client, runner, Clock(monkeypatch))
    tokens = login_new(client)
    client.delete(f"/admin/users/{tokens['user']['id']}/sessions", headers=root.headers)
    fresh = client.post("/login", json={"username": "ulla", "password": PASSWORD}).get_json()
    events = client.get("/me/export", headers=bearer(fresh["access_token"])).get_json()["events"]
    by_admin = [event for event in events if event["type"] == "session_revoked"]
    assert by_admin and all(e["actor_id"] is None and e["ip"] is None for e in by_admin)
    own = [event for event in events if event["type"] == "login"]
    assert own and all(event["ip"] == "127.0.0.1" for event in own)


def login_new(client):
    body = {"username": "ulla", "password": PASSWORD}
    response = client.post("/signup", json=body)
    assert response.status_code == 201
    return response.get_json()
