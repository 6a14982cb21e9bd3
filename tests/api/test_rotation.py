"""DESIGN §3: refresh rotation, the grace window, reuse detection, concurrent refreshes."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from authsvc.extensions import db
from authsvc.models import Session
from tests.support.helpers import assert_invalid_token, bearer, claims_of, login, signup


def refresh(client, token):
    return client.post("/refresh", headers=bearer(token))


def generation(app):
    with app.app_context():
        return db.session.scalar(select(Session.generation))


def test_previous_token_within_grace_gets_the_current_generation_without_bump(app, client):
    first = signup(client)
    second = refresh(client, first["refresh_token"]).get_json()
    assert generation(app) == 1
    # A second tab (or a retried, lost response) presents the previous token: same generation.
    again = refresh(client, first["refresh_token"])
    assert again.status_code == 200
    assert claims_of(again.get_json()["refresh_token"])["gen"] == 1
    assert generation(app) == 1
    # Both pairs of the current generation still work.
    assert client.get("/me", headers=bearer(second["access_token"])).status_code == 200
    assert refresh(client, again.get_json()["refresh_token"]).status_code == 200
    assert generation(app) == 2


def test_previous_token_after_grace_is_reuse_and_revokes_the_session(make_app):
    app = make_app(AUTHSVC_REFRESH_REUSE_GRACE="1")
    client = app.test_client()
    first = signup(client)
    second = refresh(client, first["refresh_token"]).get_json()
    time.sleep(1.3)
    response = refresh(client, first["refresh_token"])
    assert_invalid_token(response, "token_revoked")
    # The whole session is gone: its current refresh token and its access tokens too.
    assert_invalid_token(refresh(client, second["refresh_token"]), "token_revoked")
    assert_invalid_token(client.get("/me", headers=bearer(second["access_token"])), "token_revoked")
    assert_invalid_token(client.get("/me", headers=bearer(first["access_token"])), "token_revoked")
    with app.app_context():
        assert db.session.scalar(select(Session.revoked_reason)) == "reuse_detected"


def test_older_generation_is_reuse_even_within_grace(app, client):
    first = signup(client)
    second = refresh(client, first["refresh_token"]).get_json()
    third = refresh(client, second["refresh_token"]).get_json()
    # Generation 0 is two behind: never acceptable.
    assert_invalid_token(refresh(client, first["refresh_token"]), "token_revoked")
    assert_invalid_token(refresh(client, third["refresh_token"]), "token_revoked")


def test_reuse_only_revokes_that_session(client):
    victim = signup(client)
    other = login(client)
    second = refresh(client, victim["refresh_token"]).get_json()
    refresh(client, second["refresh_token"])
    # Generation 0 is now two behind: reuse, and only the victim's session is revoked.
    assert_invalid_token(refresh(client, victim["refresh_token"]), "token_revoked")
    assert client.get("/me", headers=bearer(other["access_token"])).status_code == 200
    assert refresh(client, other["refresh_token"]).status_code == 200


def test_reuse_is_logged_as_a_security_event(make_app, capfd):
    app = make_app(AUTHSVC_REFRESH_REUSE_GRACE="0")
    client = app.test_client()
    first = signup(client)
    refresh(client, first["refresh_token"])
    time.sleep(1.05)
    refresh(client, first["refresh_token"])
    err = capfd.readouterr().err
    assert '"event": "refresh_reuse_detected"' in err
    assert first["refresh_token"] not in err


@pytest.mark.parametrize("pool_size", ["1", "10"])
def test_concurrent_refreshes_of_one_token(make_app, backend, pool_size):
    """Concurrent refreshes with one token (12 on SQLite, 50 on PostgreSQL): no 5xx, no
    deadlock even with a pool of one connection, exactly one generation bump."""
    parallel = 50 if backend == "postgres" else 12
    app = make_app(AUTHSVC_DB_POOL_SIZE=pool_size)
    tokens = signup(app.test_client())
    barrier = threading.Barrier(parallel)
    results: list[tuple[int, int | None]] = []

    def attempt() -> None:
        client = app.test_client()
        barrier.wait(timeout=10)
        response = refresh(client, tokens["refresh_token"])
        body = response.get_json()
        gen = claims_of(body["refresh_token"])["gen"] if response.status_code == 200 else None
        results.append((response.status_code, gen))

    threads = [threading.Thread(target=attempt) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a refresh hung (deadlock?)"
    assert len(results) == parallel
    assert all(status == 200 for status, _ in results), results
    assert {gen for _, gen in results} == {1}
    assert generation(app) == 1
