"""authsvc.tokens.session_states: the per-process session-state cache and its revocation
broadcast (DESIGN §3), on the real Redis. Two ``SessionStates`` with their own subscribers stand
for two processes; the gunicorn replicas and the Redis outages are in
tests/integration/test_faults.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from authsvc.runtime import runtime
from authsvc.tokens import session_states as module
from authsvc.tokens.session_states import SessionStates
from tests.support.helpers import bearer, claims_of, login, signup

# Bounds on waits, not assertions on speed: a healthy subscriber is up within milliseconds.
WAIT = 5.0


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        time.sleep(0.005)


@pytest.fixture
def shared_redis(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url, socket_timeout=1.0)
    client.flushdb()
    return client


@pytest.fixture
def make_states(shared_redis: redis.Redis) -> Iterator:
    made: list[SessionStates] = []

    def make(ttl: float = 30) -> SessionStates:
        states = SessionStates(ttl, shared_redis)
        made.append(states)
        wait_until(states.healthy, "subscribed")
        return states

    yield make
    for states in made:
        states.close()


def cached(states: SessionStates, session_id: uuid.UUID, user_id: str = "u1") -> None:
    states.put(session_id, user_id, ("row", session_id), states.reading())
    assert states.get(session_id) == ("row", session_id)


def test_without_redis_nothing_is_ever_cached():
    """No broadcast reaches the other workers or the CLI: every check reads the database."""
    states = SessionStates(30, None)
    session_id = uuid.uuid4()
    assert states.reading() is None
    states.put(session_id, "u1", "row", states.reading())
    states.put(session_id, "u1", "row", 0)
    assert states.get(session_id) is None
    assert not states.healthy()
    states.announce([("s", str(session_id))])  # a no-op drop, no error


def test_a_revocation_announced_in_one_process_drops_the_entry_in_another(make_states):
    here, there = make_states(), make_states()
    session_id = uuid.uuid4()
    cached(there, session_id)
    here.announce([("s", str(session_id))])
    wait_until(lambda: there.get(session_id) is None, "the other process dropped the session")


def test_a_user_wide_revocation_drops_every_session_of_that_user_only(make_states):
    here, there = make_states(), make_states()
    alice_one, alice_two, bob = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for session_id, user in ((alice_one, "alice"), (alice_two, "alice"), (bob, "bob")):
        cached(there, session_id, user)
    here.announce([("u", "alice")])
    wait_until(lambda: there.get(alice_one) is None, "alice's sessions dropped")
    assert there.get(alice_two) is None
    assert there.get(bob) == ("row", bob)


def test_the_announcing_process_drops_before_it_publishes(make_states):
    states = make_states()
    session_id = uuid.uuid4()
    cached(states, session_id)
    states.announce([("s", str(session_id))])
    assert states.get(session_id) is None  # no wait: the logout's own process refuses at once


def test_a_read_that_raced_an_announcement_is_not_stored(make_states):
    """A row read before a revocation committed, stored after its announcement, would be stale
    until the TTL: the epoch taken before the read refuses it."""
    states = make_states()
    session_id = uuid.uuid4()
    epoch = states.reading()
    states.announce([("s", str(uuid.uuid4()))])  # any announcement while the row was read
    states.put(session_id, "u1", "stale row", epoch)
    assert states.get(session_id) is None


def test_entries_live_at_most_the_ttl(make_states):
    states = make_states(ttl=0.2)
    session_id = uuid.uuid4()
    cached(states, session_id)
    time.sleep(0.25)
    assert states.get(session_id) is None


def test_a_garbled_message_on_the_channel_empties_the_cache(make_states, shared_redis):
    states = make_states()
    session_id = uuid.uuid4()
    cached(states, session_id)
    shared_redis.publish(module.CHANNEL, "s:not-a-uuid")
    wait_until(lambda: states.get(session_id) is None, "the cache was emptied")


def test_a_lost_subscription_empties_the_cache_and_stops_its_use(make_states, shared_redis):
    """Announcements made while the connection is gone are lost: the cache is bypassed until
    the subscriber is back, and starts empty."""
    states = make_states()
    session_id = uuid.uuid4()
    cached(states, session_id)
    killed = 0
    for client in shared_redis.client_list(_type="pubsub"):
        killed += shared_redis.client_kill_filter(_id=client["id"])
    assert killed >= 1
    wait_until(lambda: not states._subscribed, "the subscriber noticed")
    assert states.get(session_id) is None
    wait_until(states.healthy, "subscribed again")
    assert states.get(session_id) is None  # nothing from before the loss came back
    cached(states, session_id)


def test_the_app_uses_the_cache_and_a_logout_drops_it_before_answering(app, client, backend):
    """In the app: with Redis, the second check of a session reads no database; a logout's
    commit drops the entry in this process at once (no wait for the broadcast)."""
    tokens = signup(client)
    other = login(client)
    session_id = uuid.UUID(claims_of(tokens["access_token"])["sid"])
    with app.app_context():
        states = runtime().session_states
    if backend == "sqlite":
        assert not states.enabled
        return
    wait_until(states.healthy, "subscribed")
    for _ in range(2):
        assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 200
    hits = states.hits
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 200
    assert states.hits == hits + 1
    assert client.post("/logout", headers=bearer(tokens["access_token"])).status_code == 204
    assert states.get(session_id) is None
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert client.get("/me", headers=bearer(other["access_token"])).status_code == 200


def test_a_rolled_back_revocation_announces_nothing(app, client, backend):
    """A revocation whose transaction fails must not empty other processes' caches for nothing,
    nor leave a pending announcement for the next commit of the same ORM session."""
    from authsvc.extensions import db
    from authsvc.store import sessions as session_store
    from authsvc.store.database import write_transaction

    tokens = signup(client)
    session_id = uuid.UUID(claims_of(tokens["access_token"])["sid"])
    with app.app_context():
        with pytest.raises(RuntimeError), write_transaction():
            session_store.revoke(session_id=session_id, reason="test")
            raise RuntimeError("the transaction fails")
        assert session_store.REVOKED_PENDING_KEY not in db.session().info
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 200
