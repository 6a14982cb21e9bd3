"""The audit trail (DESIGN §11): a row in ``audit_events`` for every security event, written by
its action in the action's transaction, holding no secret, next to its JSON log line; listed by
`flask events list` and GET /admin/events, pruned after AUTHSVC_AUDIT_RETENTION_DAYS. On SQLite
and PostgreSQL + Redis."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from authsvc.extensions import db
from authsvc.models import AuditEvent, SigningKey, User, utcnow
from authsvc.runtime import runtime
from authsvc.services import lifecycle
from tests.support.admin import Admin, make_admin, operator_token
from tests.support.helpers import OTHER_PASSWORD, PASSWORD, assert_problem, bearer, login, signup
from tests.support.mfa import Clock, enrol_totp, mfa_token
from tests.support.smtp import MailServer, token_in

RID = "audit-trace-42"
TRACED = {"X-Request-Id": RID}
NEW_PASSWORD = "a brand new and unusual passphrase"
LOCAL = "127.0.0.1"
TOKEN_KEYS = ("access_token", "refresh_token")
EVENT_FIELDS = {"id", "type", "at", "user_id", "actor_id", "ip", "request_id", "detail"}


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


def log_lines(capfd) -> list[dict[str, Any]]:
    """The JSON lines the service wrote to stderr so far (as in production)."""
    return [json.loads(line) for line in capfd.readouterr().err.splitlines() if line[:1] == "{"]


def rows(app, **where: Any) -> list[dict[str, Any]]:
    """The audit rows matching ``where`` (column=value), oldest first, as plain dicts."""
    query = select(AuditEvent.__table__).order_by(AuditEvent.at, AuditEvent.id)
    for name, value in where.items():
        query = query.where(getattr(AuditEvent, name) == value)
    with app.app_context():
        return [dict(row) for row in db.session.execute(query).mappings()]


def subject(row: dict[str, Any]) -> str | None:
    return str(row["user_id"]) if row["user_id"] is not None else None


def mailed_link(mail: MailServer, subject: str) -> str:
    """The token of the (last) message with ``subject``, once it has arrived: notices of the
    same flow are sent alongside, in no fixed order."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [message for message in mail.messages() if message["Subject"] == subject]
        if found:
            return token_in(found[-1])
        time.sleep(0.02)
    raise AssertionError(f"no message {subject!r} in {[m['Subject'] for m in mail.messages()]}")


def traced(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), **TRACED}


# -- 1. every event type, written by the action that causes it -----------------------------------


@dataclass
class World:
    app: Any
    client: Any
    runner: Any
    clock: Clock
    mail: MailServer
    _root: Admin | None = None

    @property
    def root(self) -> Admin:
        """An admin at aal2 (made on first use, before the traced request)."""
        if self._root is None:
            self._root = make_admin(self.client, self.runner, self.clock)
        return self._root

    def user(self, name: str = "alice", email: str | None = None) -> dict[str, Any]:
        body = {"username": name, "password": PASSWORD, **({"email": email} if email else {})}
        response = self.client.post("/signup", json=body)
        assert response.status_code == 201, response.get_json()
        return {**response.get_json(), "id": response.get_json()["user"]["id"]}

    def traced(self, method: str, path: str, status: int, token: str | None = None, **kw: Any):
        """The request under test: it carries X-Request-Id RID (and ``token``)."""
        headers = traced(bearer(token) if token else None)
        response = self.client.open(path, method=method, headers=headers, **kw)
        assert response.status_code == status, response.get_data(as_text=True)
        return response


@dataclass
class Expect:
    type: str
    user_id: str | None
    actor_id: str | None
    detail: dict[str, Any] = field(default_factory=dict)
    ip: str | None = LOCAL


def act_signup(w):
    body = w.traced("POST", "/signup", 201, json={"username": "alice", "password": PASSWORD})
    return Expect("signup", body.get_json()["user"]["id"], None)


def act_login(w):
    alice = w.user()
    w.traced("POST", "/login", 200, json={"username": "alice", "password": PASSWORD})
    return Expect("login", alice["id"], None, {"amr": ["pwd"]})


def act_login_unknown_user(w):
    w.traced("POST", "/login", 401, json={"username": "ghost", "password": PASSWORD})
    return Expect("login_failed", None, None, {"reason": "unknown_user"})


def act_login_wrong_password(w):
    alice = w.user()
    w.traced("POST", "/login", 401, json={"username": "alice", "password": OTHER_PASSWORD})
    return Expect("login_failed", alice["id"], None, {"reason": "wrong_password"})


def act_refresh_reuse(w):
    first = w.user()
    second = w.client.post("/refresh", headers=bearer(first["refresh_token"])).get_json()
    w.client.post("/refresh", headers=bearer(second["refresh_token"]))
    # Generation 0 is now two behind: reuse, whatever the grace window.
    w.traced("POST", "/refresh", 401, first["refresh_token"])
    generations = {"presented_generation": 0, "current_generation": 2}
    return Expect("refresh_reuse_detected", first["id"], None, generations)


def act_logout(w):
    alice = w.user()
    w.traced("POST", "/logout", 204, alice["access_token"])
    return Expect("session_revoked", alice["id"], alice["id"], {"scope": "local", "count": 1})


def act_password_change(w):
    alice = w.user()
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    w.traced("POST", "/password", 204, alice["access_token"], json=body)
    return Expect("password_changed", alice["id"], alice["id"])


def act_password_reset(w):
    alice = w.user(email="alice@example.com")
    w.client.post("/password/forgot", json={"email": "alice@example.com"})
    body = {"token": mailed_link(w.mail, "Reset your password"), "new_password": NEW_PASSWORD}
    w.traced("POST", "/password/reset", 204, json=body)
    return Expect("password_reset", alice["id"], None, {"via": "email", "sessions_revoked": 1})


def act_email_verified(w):
    alice = w.user(email="alice@example.com")
    body = {"token": mailed_link(w.mail, "Confirm your e-mail address")}
    w.traced("POST", "/email/verify", 200, json=body)
    return Expect("email_verified", alice["id"], None)


def act_email_changed(w):
    alice = w.user(email="alice@example.com")
    body = {"email": "alice@new.example", "current_password": PASSWORD}
    w.client.post("/email/change", json=body, headers=bearer(alice["access_token"]))
    body = {"token": mailed_link(w.mail, "Confirm your new e-mail address")}
    w.traced("POST", "/email/verify", 200, json=body)
    return Expect("email_changed", alice["id"], None)


def act_mfa_enabled(w):
    alice = w.user()
    body = {"current_password": PASSWORD}
    factor = w.client.post("/mfa/totp", json=body, headers=bearer(alice["access_token"]))
    factor = factor.get_json()
    body = {"code": w.clock.code(factor["secret"])}
    w.traced("POST", f"/mfa/totp/{factor['id']}/confirm", 200, alice["access_token"], json=body)
    return Expect(
        "mfa_enabled", alice["id"], alice["id"], {"factor_id": factor["id"], "factor_type": "totp"}
    )


def act_mfa_disabled(w):
    alice = w.user()
    enrolled = enrol_totp(w.client, alice["access_token"], w.clock)
    w.clock.advance()
    body = {"current_password": PASSWORD, "code": w.clock.code(enrolled.secret)}
    w.traced("DELETE", f"/mfa/{enrolled.factor_id}", 204, alice["access_token"], json=body)
    return Expect("mfa_disabled", alice["id"], alice["id"], {"factor_id": enrolled.factor_id})


def act_recovery_code_used(w):
    alice = w.user()
    enrolled = enrol_totp(w.client, alice["access_token"], w.clock)
    body = {"mfa_token": mfa_token(w.client), "code": enrolled.recovery_codes[0]}
    w.traced("POST", "/login/mfa", 200, json=body)
    return Expect("recovery_code_used", alice["id"], None)


def act_user_created(w):
    body = {"username": "bob", "password": PASSWORD, "roles": ["admin"]}
    created = w.traced("POST", "/admin/users", 201, w.root.access_token, json=body)
    return Expect("user_created", created.get_json()["id"], w.root.user_id, {"roles": ["admin"]})


def act_user_updated(w):
    bob = w.user("bob")
    path, body = f"/admin/users/{bob['id']}", {"roles": ["admin"]}
    w.traced("PATCH", path, 200, w.root.access_token, json=body)
    return Expect(
        "user_updated", bob["id"], w.root.user_id, {"roles_added": ["admin"], "roles_removed": []}
    )


def act_user_disabled_by_operator(w):
    bob = w.user("bob")
    path, body = f"/admin/users/{bob['id']}", {"disabled": True}
    w.traced("PATCH", path, 200, operator_token(w.app), json=body)
    return Expect("user_disabled", bob["id"], "operator:ops", {"sessions_revoked": 1})


def act_user_deleted_by_admin(w):
    bob = w.user("bob")
    w.traced("DELETE", f"/admin/users/{bob['id']}", 204, w.root.access_token)
    return Expect("user_deleted", bob["id"], w.root.user_id)


def act_user_deleted_by_self(w):
    alice = w.user()
    w.traced("DELETE", "/me", 204, alice["access_token"], json={"current_password": PASSWORD})
    # The erasure leaves the user's rows their id only: no address (DESIGN §11).
    return Expect("user_deleted", alice["id"], alice["id"], {"by": "self"}, ip=None)


ACTIONS = [action for name, action in list(globals().items()) if name.startswith("act_")]


@pytest.mark.parametrize("action", ACTIONS, ids=lambda action: action.__name__[4:])
def test_each_event_is_written_by_its_action(mail_app, mail_server, clock, action):
    world = World(mail_app, mail_app.test_client(), mail_app.test_cli_runner(), clock, mail_server)
    before = utcnow()
    expected = action(world)
    (row,) = rows(mail_app, request_id=RID, type=expected.type)
    assert before <= row["at"] <= utcnow()
    assert subject(row) == expected.user_id
    assert row["actor_id"] == expected.actor_id
    assert row["ip"] == expected.ip
    assert expected.detail.items() <= row["detail"].items(), row["detail"]


def test_key_rotation_is_audited(app, client, runner):
    signup(client)
    with app.app_context():
        old_kid = runtime().keyring.signing_key().kid
    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    new_kid = re.search(r"^published (\S+)", result.output, re.M).group(1)
    (published,) = rows(app, type="key_published")
    assert published["detail"]["kid"] == new_kid and published["detail"]["reason"] == "manual"
    # The publish delay has passed: the next key signs from the next look at the key table.
    with app.app_context():
        db.session.execute(
            update(SigningKey)
            .where(SigningKey.kid == new_kid)
            .values(created_at=utcnow() - timedelta(days=1))
        )
        db.session.commit()
        runtime().keyring.refresh()
        assert runtime().keyring.signing_key().kid == new_kid
    (rotated,) = rows(app, type="key_rotated")
    assert rotated["detail"] == {"kid": new_kid, "retired_kid": old_kid}
    # No request, no caller: a maintenance step of the service itself.
    assert (rotated["user_id"], rotated["actor_id"], rotated["request_id"]) == (None, None, None)


# -- 2. in the action's transaction ---------------------------------------------------------------


def test_a_refused_action_writes_no_success_row(app, client):
    alice = signup(client)
    taken = {"username": "Alice", "password": PASSWORD}
    assert_problem(client.post("/signup", json=taken, headers=TRACED), 409, "username_taken")
    assert rows(app, request_id=RID) == []
    assert len(rows(app, type="signup")) == 1
    # A wrong current password: the failure is written, the change is not.
    body = {"current_password": OTHER_PASSWORD, "new_password": NEW_PASSWORD}
    response = client.post("/password", json=body, headers=traced(bearer(alice["access_token"])))
    assert_problem(response, 401, "invalid_credentials")
    (failed,) = rows(app, request_id=RID)
    assert failed["type"] == "password_change_failed"
    assert str(failed["user_id"]) == alice["user"]["id"] == failed["actor_id"]
    assert rows(app, type="password_changed") == []


def test_an_action_rolled_back_after_its_event_leaves_no_row_and_no_line(
    app, client, monkeypatch, capfd
):
    """The user_deleted row is written before the erasure; the erasure fails: both go."""
    alice = signup(client)
    real_erase = lifecycle.erase

    def erase_then_fail(user):
        real_erase(user)
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(lifecycle, "erase", erase_then_fail)
    headers = traced(bearer(alice["access_token"]))
    response = client.delete("/me", json={"current_password": PASSWORD}, headers=headers)
    assert response.status_code == 500
    assert rows(app, request_id=RID) == []
    assert not any(line.get("event") == "user_deleted" for line in log_lines(capfd))
    assert client.get("/me", headers=bearer(alice["access_token"])).status_code == 200
    (kept,) = rows(app, type="signup")
    assert kept["ip"] == LOCAL  # the erasure's forgetting of addresses rolled back too


def test_a_replayed_code_is_recorded_though_its_transaction_rolled_back(app, client, clock):
    alice = signup(client)
    enrolled = enrol_totp(client, alice["access_token"], clock)
    clock.advance()
    code = clock.code(enrolled.secret)
    first = client.post("/login/mfa", json={"mfa_token": mfa_token(client), "code": code})
    assert first.status_code == 200
    again = client.post(
        "/login/mfa", json={"mfa_token": mfa_token(client), "code": code}, headers=TRACED
    )
    assert_problem(again, 401, "invalid_code")
    (replayed,) = rows(app, request_id=RID)  # once: not lost with the rollback, nor doubled
    assert replayed["type"] == "login_failed"
    assert replayed["detail"] == {"reason": "replayed_step"}
    assert str(replayed["user_id"]) == alice["user"]["id"]
    assert len(rows(app, type="login")) == 1  # the replay opened no session


# -- 3. no secret ---------------------------------------------------------------------------------


def test_no_row_holds_a_secret(mail_app, mail_client, mail_server, clock):
    client = mail_client
    secrets: list[str] = [PASSWORD, NEW_PASSWORD, "a wrong passphrase attempt"]
    body = {"username": "alice", "password": PASSWORD, "email": "alice@example.com"}
    alice = client.post("/signup", json=body).get_json()
    link = mailed_link(mail_server, "Confirm your e-mail address")
    client.post("/email/verify", json={"token": link})
    pair = client.post("/refresh", headers=bearer(alice["refresh_token"])).get_json()
    enrolled = enrol_totp(client, pair["access_token"], clock)
    step = mfa_token(client)
    by_code = client.post(
        "/login/mfa", json={"mfa_token": step, "code": enrolled.recovery_codes[0]}
    )
    client.post("/login", json={"username": "alice", "password": "a wrong passphrase attempt"})
    wrong = {"current_password": "a wrong passphrase attempt", "new_password": NEW_PASSWORD}
    client.post("/password", json=wrong, headers=bearer(pair["access_token"]))
    client.post("/password/forgot", json={"email": "alice@example.com"})
    reset = mailed_link(mail_server, "Reset your password")
    client.post("/password/reset", json={"token": reset, "new_password": NEW_PASSWORD})
    admin = operator_token(mail_app)
    client.get("/admin/events", headers=bearer(admin))
    with mail_app.app_context():
        stored_hash = db.session.scalar(select(User.password_hash))
    tokens = [admin, *(p[k] for p in (alice, pair, by_code.get_json()) for k in TOKEN_KEYS)]
    secrets += [link, reset, step, enrolled.secret, stored_hash, *enrolled.recovery_codes]
    secrets += [code.replace("-", "") for code in enrolled.recovery_codes]
    secrets += [part for token in tokens for part in (token, token.split(".")[-1])]

    everything = rows(mail_app)
    flow = "signup email_verified mfa_enabled recovery_code_used login_failed password_reset"
    assert {*flow.split(), "password_change_failed", "admin_token_issued"} <= {
        row["type"] for row in everything
    }
    dumped = json.dumps(everything, default=str)
    leaked = [secret for secret in secrets if secret in dumped]
    assert leaked == []


# -- 4. the log line stays ------------------------------------------------------------------------


def test_every_row_has_its_log_line_and_every_line_its_row(app, client, capfd):
    alice = signup(client, headers={"X-Request-Id": "trace-signup"})
    client.post("/signup", json={"username": "alice", "password": PASSWORD}, headers=TRACED)
    client.post("/login", json={"username": "alice", "password": OTHER_PASSWORD})
    client.post("/logout", headers=bearer(alice["access_token"]))
    headers = bearer(operator_token(app))
    client.patch(f"/admin/users/{alice['user']['id']}", json={"disabled": True}, headers=headers)

    lines = [line for line in log_lines(capfd) if line["logger"] == "authsvc.security"]
    logged = Counter((line["event"], line["request_id"], line["user_id"]) for line in lines)
    stored = Counter((row["type"], row["request_id"], subject(row)) for row in rows(app))
    assert logged == stored
    assert ("signup", "trace-signup", alice["user"]["id"]) in logged
    assert not any(line["request_id"] == RID for line in lines)  # the refused signup: neither
    (disabled,) = [line for line in lines if line["event"] == "user_disabled"]
    assert disabled["actor_id"] == "operator:ops"


# -- 5. retention ---------------------------------------------------------------------------------


def age(app, user_id: str, days: float) -> None:
    with app.app_context():
        db.session.execute(
            update(AuditEvent)
            .where(AuditEvent.user_id == uuid.UUID(user_id))
            .values(at=utcnow() - timedelta(days=days))
        )
        db.session.commit()


def test_prune_deletes_the_events_past_their_retention(make_app):
    default, short = make_app(), make_app(AUTHSVC_AUDIT_RETENTION_DAYS="1")
    client = default.test_client()
    ancient, old, recent = (signup(client, name)["user"]["id"] for name in ("ann", "bob", "cyd"))
    age(default, ancient, 91)
    age(default, old, 2)
    age(default, recent, 0.5)
    result = default.test_cli_runner().invoke(args=["prune"])  # 90 days
    assert result.exit_code == 0, result.output
    assert "1 old audit events" in result.output
    assert {str(row["user_id"]) for row in rows(default, type="signup")} == {old, recent}
    result = short.test_cli_runner().invoke(args=["prune"])  # 1 day
    assert "1 old audit events" in result.output
    assert {str(row["user_id"]) for row in rows(default, type="signup")} == {recent}


# -- 6. flask events list -------------------------------------------------------------------------


def listed(runner, *args: str) -> list[tuple[str, str]]:
    """(type, user=...) of each line of `flask events list ARGS`."""
    result = runner.invoke(args=["events", "list", *args])
    assert result.exit_code == 0, result.output
    return [tuple(line.split("  ")[1:3]) for line in result.output.splitlines()]


def test_flask_events_list(app, client, runner):
    alice = signup(client, "alice")["user"]["id"]
    bob = signup(client, "bob")["user"]["id"]
    login(client, "alice")
    client.post("/login", json={"username": "bob", "password": OTHER_PASSWORD})
    a, b = f"user={alice}", f"user={bob}"
    newest_first = [("login_failed", b), ("login", a), ("signup", b), ("signup", a)]
    assert listed(runner) == newest_first
    line = runner.invoke(args=["events", "list", "--limit", "1"]).output
    assert f"login_failed  {b}  actor=-  ip={LOCAL}" in line and '"reason":"wrong_password"' in line
    assert listed(runner, "--user", "alice") == [("login", a), ("signup", a)]
    assert listed(runner, "--user", bob) == [("login_failed", b), ("signup", b)]
    assert listed(runner, "--type", "signup") == [("signup", b), ("signup", a)]
    assert listed(runner, "--type", "login", "--type", "signup", "--user", "alice") == [
        ("login", a),
        ("signup", a),
    ]
    assert listed(runner, "--limit", "2") == newest_first[:2]
    assert listed(runner, "--since", "2999-01-01T00:00:00") == []
    unknown = runner.invoke(args=["events", "list", "--user", "nobody"])
    assert unknown.exit_code != 0


# -- 7. GET /admin/events -------------------------------------------------------------------------


def test_admin_events_filters_and_pages(app, client):
    headers = bearer(operator_token(app))
    alice = signup(client, "alice")["user"]["id"]
    bob = signup(client, "bob")["user"]["id"]
    login(client, "alice")
    login(client, "alice")
    client.post("/login", json={"username": "bob", "password": OTHER_PASSWORD})

    def events(**query: Any) -> dict[str, Any]:
        response = client.get("/admin/events", query_string=query, headers=headers)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    everything = events(limit=200)["events"]
    assert len(everything) == 6  # and the operator's token, issued first
    assert set(everything[0]) == EVENT_FIELDS
    assert [e["at"] for e in everything] == sorted((e["at"] for e in everything), reverse=True)
    assert everything[-1]["type"] == "admin_token_issued"
    of_alice = events(user_id=alice)["events"]
    assert [(e["type"], e["user_id"]) for e in of_alice] == [("login", alice)] * 2 + [
        ("signup", alice)
    ]
    assert [e["user_id"] for e in events(type="signup")["events"]] == [bob, alice]
    since = of_alice[1]["at"]  # alice's first login
    assert [e["type"] for e in events(since=since)["events"]] == ["login_failed", "login", "login"]
    assert events(type="login", user_id=bob) == {"events": [], "next_cursor": None}

    first = events(limit=4)
    assert first["events"] == everything[:4] and first["next_cursor"]
    assert events(limit=4, cursor=first["next_cursor"]) == {
        "events": everything[4:],
        "next_cursor": None,
    }


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"cursor": "not a cursor"}, "invalid_cursor"),
        ({"cursor": "WyJub3BlIl0"}, "invalid_cursor"),  # base64url of '["nope"]'
        ({"colour": "red"}, "invalid_request"),
        ({"user_id": "alice"}, "invalid_request"),
        ({"limit": "0"}, "invalid_request"),
        ({"since": "yesterday"}, "invalid_request"),
    ],
)
def test_admin_events_refuses_a_bad_query(app, client, query, code):
    response = client.get("/admin/events", query_string=query, headers=bearer(operator_token(app)))
    assert_problem(response, 400, code)
