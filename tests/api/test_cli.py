"""flask commands."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from authsvc.extensions import db
from authsvc.models import Session, utcnow
from tests.support.helpers import OTHER_PASSWORD, PASSWORD, bearer, claims_of, login, signup


def count(app, model):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_prune_deletes_expired_and_long_revoked_sessions(app, client, runner):
    keep = signup(client)
    expired = login(client)
    revoked = login(client)
    client.post("/logout", headers=bearer(revoked["access_token"]))
    with app.app_context():
        now = utcnow()
        db.session.execute(
            update(Session)
            .where(Session.revoked_at.is_not(None))
            .values(revoked_at=now - timedelta(days=2))
        )
        db.session.commit()
        db.session.execute(
            update(Session)
            .where(Session.id == uuid.UUID(claims_of(expired["access_token"])["sid"]))
            .values(expires_at=now - timedelta(seconds=1))
        )
        db.session.commit()
    assert count(app, Session) == 3
    result = runner.invoke(args=["prune"])
    assert result.exit_code == 0, result.output
    assert "pruned 2 expired sessions" in result.output
    assert count(app, Session) == 1
    assert client.get("/me", headers=bearer(keep["access_token"])).status_code == 200


# -- users ---------------------------------------------------------------------------------------


def test_users_create_with_roles_then_login(client, runner):
    result = runner.invoke(
        args=["users", "create", "Admin@Example.com", "--role", "admin", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    assert "created admin@example.com" in result.output
    assert PASSWORD not in result.output
    body = login(client, username="admin@example.com")
    assert body["user"]["roles"] == ["admin"]
    assert claims_of(body["access_token"])["roles"] == ["admin"]


def test_users_create_prompts_for_the_password(runner, client):
    result = runner.invoke(args=["users", "create", "bob"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    login(client, username="bob")


def test_users_create_enforces_the_rules(runner, client):
    signup(client, username="taken")
    weak = runner.invoke(args=["users", "create", "carol", "--password-stdin"], input="short\n")
    assert weak.exit_code != 0 and "at least 12" in weak.output
    taken = runner.invoke(args=["users", "create", "TAKEN", "--password-stdin"], input=PASSWORD)
    assert taken.exit_code != 0 and "taken" in taken.output
    bad = runner.invoke(args=["users", "create", "a b", "--password-stdin"], input=PASSWORD)
    assert bad.exit_code != 0


def test_users_disable_stops_login_and_refresh_at_once(client, runner):
    first = signup(client)
    second = login(client)
    result = runner.invoke(args=["users", "disable", "alice"])
    assert result.exit_code == 0, result.output
    assert "revoked 2 sessions" in result.output
    for tokens in (first, second):
        assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 401
        assert client.post("/refresh", headers=bearer(tokens["refresh_token"])).status_code == 401
    response = client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_credentials"


def test_users_set_password_revokes_sessions(client, runner):
    tokens = signup(client)
    result = runner.invoke(
        args=["users", "set-password", "alice", "--password-stdin"], input=OTHER_PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 401
    login(client, password=OTHER_PASSWORD)
    assert (
        client.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 401
    )


def test_users_commands_name_unknown_users(runner):
    for args in (["users", "disable", "ghost"], ["sessions", "revoke", "--user", "ghost"]):
        result = runner.invoke(args=args)
        assert result.exit_code != 0
        assert "ghost" in result.output


def test_users_list(client, runner):
    signup(client, username="alice")
    signup(client, username="bob")
    runner.invoke(args=["users", "disable", "bob"])
    lines = runner.invoke(args=["users", "list"]).output.splitlines()
    assert len(lines) == 2
    assert "alice" in lines[0] and "active" in lines[0]
    assert "bob" in lines[1] and "disabled" in lines[1]
    assert "$argon2" not in "".join(lines)


# -- sessions ------------------------------------------------------------------------------------


def test_sessions_revoke_by_user(client, runner):
    alice = signup(client, username="alice")
    bob = signup(client, username="bob")
    result = runner.invoke(args=["sessions", "revoke", "--user", "alice"])
    assert result.exit_code == 0 and "revoked 1 sessions" in result.output
    assert client.get("/me", headers=bearer(alice["access_token"])).status_code == 401
    assert client.get("/me", headers=bearer(bob["access_token"])).status_code == 200


def test_sessions_revoke_by_id(client, runner):
    keep = signup(client)
    drop = login(client)
    sid = claims_of(drop["access_token"])["sid"]
    result = runner.invoke(args=["sessions", "revoke", "--session", sid])
    assert result.exit_code == 0 and "revoked 1 sessions" in result.output
    assert client.post("/refresh", headers=bearer(drop["refresh_token"])).status_code == 401
    assert client.get("/me", headers=bearer(keep["access_token"])).status_code == 200


def test_sessions_revoke_needs_exactly_one_target(runner):
    assert runner.invoke(args=["sessions", "revoke"]).exit_code != 0
    both = runner.invoke(args=["sessions", "revoke", "--user", "a", "--session", str(uuid.uuid4())])
    assert both.exit_code != 0
