"""DESIGN §4 key lifecycle: next -> active -> retired -> deleted, publish before sign, one key
per rotation however many replicas rotate at once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from datetime import timedelta

import jwt
from sqlalchemy import select, update

from authsvc.extensions import db
from authsvc.models import SigningKey, utcnow
from authsvc.runtime import runtime
from authsvc.security.keys import KeyRing
from tests.support.helpers import bearer, login, signup
from tests.support.servers import ROOT
from tests.support.settings import base_config


def states(app) -> dict[str, str]:
    with app.app_context():
        return {row.kid: row.state for row in db.session.scalars(select(SigningKey))}


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def jwks_kids(client) -> list[str]:
    return [key["kid"] for key in client.get("/.well-known/jwks.json").get_json()["keys"]]


def test_rotation_publishes_first_then_signs_after_the_delay(make_app):
    app = make_app(AUTHSVC_JWKS_MAX_AGE="2")
    client = app.test_client()
    old = signup(client)
    old_kid = kid_of(old["access_token"])

    result = app.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    new_kid = re.search(r"^published (\S+)", result.output, re.M).group(1)
    assert states(app) == {old_kid: "active", new_kid: "next"}

    # Published at once, but not signing yet.
    with app.app_context():
        runtime().keyring.refresh()
    assert set(jwks_kids(client)) == {old_kid, new_kid}
    assert kid_of(login(client)["access_token"]) == old_kid

    time.sleep(3.6)  # max-age 2 s + the key cache lifetime 1 s
    fresh = login(client)
    assert kid_of(fresh["access_token"]) == new_kid
    assert states(app) == {old_kid: "retired", new_kid: "active"}
    # The retired key still verifies what it signed, and is still published.
    assert client.get("/me", headers=bearer(old["access_token"])).status_code == 200
    assert client.post("/refresh", headers=bearer(old["refresh_token"])).status_code == 200
    assert set(jwks_kids(client)) == {old_kid, new_kid}


def test_rotate_while_pending_creates_no_second_key(app, client, runner):
    signup(client)
    first = runner.invoke(args=["keys", "rotate"])
    second = runner.invoke(args=["keys", "rotate"])
    assert first.exit_code == 0 and second.exit_code == 0
    assert "already pending" in second.output
    assert sorted(states(app).values()) == ["active", "next"]


def test_replicas_rotating_at_the_same_moment_create_one_key(make_app):
    apps = [make_app() for _ in range(4)]
    signup(apps[0].test_client())
    barrier = threading.Barrier(4)
    published = []

    def rotate(app) -> None:
        with app.app_context():
            ring = KeyRing(
                secret_key=base_config()["AUTHSVC_SECRET_KEY"], policy=runtime().keyring.policy
            )
            barrier.wait(timeout=10)
            published.append(ring.publish_next_key(reason="test"))

    threads = [threading.Thread(target=rotate, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(row is not None for row in published) == 1
    assert sorted(states(apps[0]).values()) == ["active", "next"]


def test_two_processes_running_keys_rotate_at_once_create_one_key(make_app, database_config):
    app = make_app()
    signup(app.test_client())
    env = {**os.environ, **base_config(), **database_config}
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "keys", "rotate"]
    processes = [
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert sorted(states(app).values()) == ["active", "next"]
    messages = " ".join(out for out, _ in outputs)
    assert "published" in messages


def test_promotion_by_two_replicas_happens_once(make_app):
    first, second = make_app(AUTHSVC_JWKS_MAX_AGE="1"), make_app(AUTHSVC_JWKS_MAX_AGE="1")
    signup(first.test_client())
    first.test_cli_runner().invoke(args=["keys", "rotate"])
    time.sleep(2.2)
    barrier = threading.Barrier(2)
    kids = []

    def sign(app) -> None:
        client = app.test_client()
        barrier.wait(timeout=10)
        kids.append(kid_of(login(client)["access_token"]))

    threads = [threading.Thread(target=sign, args=(app,)) for app in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(set(kids)) == 1
    assert sorted(states(first).values()) == ["active", "retired"]


def test_scheduled_rotation(make_app):
    app = make_app(AUTHSVC_KEY_ROTATION_DAYS="1", AUTHSVC_JWKS_MAX_AGE="1")
    client = app.test_client()
    old_kid = kid_of(signup(client)["access_token"])
    with app.app_context():
        db.session.execute(
            update(SigningKey).values(
                created_at=utcnow() - timedelta(days=2), activated_at=utcnow() - timedelta(days=2)
            )
        )
        db.session.commit()
    time.sleep(1.1)  # the key cache lifetime
    assert len(jwks_kids(client)) == 2  # a next key was published on schedule
    assert kid_of(login(client)["access_token"]) == old_kid
    time.sleep(3.2)
    assert kid_of(login(client)["access_token"]) != old_kid


def test_no_scheduled_rotation_when_disabled(make_app):
    app = make_app(AUTHSVC_KEY_ROTATION_DAYS="0", AUTHSVC_JWKS_MAX_AGE="1")
    client = app.test_client()
    signup(client)
    with app.app_context():
        db.session.execute(update(SigningKey).values(activated_at=utcnow() - timedelta(days=400)))
        db.session.commit()
    time.sleep(1.1)
    assert len(jwks_kids(client)) == 1


def test_retired_keys_are_deleted_once_nothing_they_signed_can_live(make_app):
    app = make_app(AUTHSVC_JWKS_MAX_AGE="1")
    client = app.test_client()
    old = signup(client)
    app.test_cli_runner().invoke(args=["keys", "rotate"])
    time.sleep(2.2)
    login(client)  # promotes
    old_kid = kid_of(old["access_token"])
    assert states(app)[old_kid] == "retired"
    # Not yet: its refresh token could still be live.
    result = app.test_cli_runner().invoke(args=["prune"])
    assert "0 dead keys" in result.output
    with app.app_context():
        db.session.execute(
            update(SigningKey)
            .where(SigningKey.kid == old_kid)
            .values(retired_at=utcnow() - timedelta(days=31))
        )
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["prune"])
    assert "1 dead keys" in result.output
    assert old_kid not in states(app)
    with app.app_context():
        runtime().keyring.refresh()
    assert old_kid not in jwks_kids(client)


def test_keys_list(app, client, runner):
    signup(client)
    runner.invoke(args=["keys", "rotate"])
    lines = runner.invoke(args=["keys", "list"]).output.splitlines()
    keys = [line.split() for line in lines if not line.startswith("{")]
    assert [key[2] for key in keys] == ["active", "next"]
    assert all(key[1] == "ES256" for key in keys)
