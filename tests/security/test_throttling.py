"""DESIGN §5 throttling: per address, failed logins per username, 429 with Retry-After, shared
through Redis, never silently off."""

from __future__ import annotations

import pytest

from tests.support.helpers import OTHER_PASSWORD, PASSWORD, assert_problem, bearer, signup


def throttled(make_app, **limits: str):
    return make_app(AUTHSVC_RATELIMIT_ENABLED="true", **limits)


def login(client, username="alice", password=PASSWORD, **kwargs):
    return client.post("/login", json={"username": username, "password": password}, **kwargs)


def assert_rate_limited(response):
    assert_problem(response, 429, "rate_limited")
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 3600


def test_signup_per_address(make_app):
    client = throttled(make_app, AUTHSVC_RATELIMIT_SIGNUP_ADDRESS="3/minute").test_client()
    for index in range(3):
        signup(client, username=f"user{index}")
    response = client.post("/signup", json={"username": "user9", "password": PASSWORD})
    assert_rate_limited(response)
    assert int(response.headers["Retry-After"]) <= 60


def test_login_per_address(make_app):
    app = throttled(make_app, AUTHSVC_RATELIMIT_LOGIN_ADDRESS="4/minute")
    client = app.test_client()
    signup(client)
    assert [login(client).status_code for _ in range(4)] == [200] * 4
    assert_rate_limited(login(client))


def test_failed_logins_per_username_then_even_the_right_password_waits(make_app):
    app = throttled(make_app, AUTHSVC_RATELIMIT_LOGIN_USERNAME="3/minute;100/hour")
    client = app.test_client()
    signup(client)
    for _ in range(3):
        assert login(client, password=OTHER_PASSWORD).status_code == 401
    assert_rate_limited(login(client, password=PASSWORD))
    assert_rate_limited(login(client, username=" ALICE ", password=PASSWORD))  # same account
    # Another account from the same address is not affected.
    signup(client, username="bob")
    assert login(client, username="bob").status_code == 200


def test_successful_logins_do_not_count_against_the_username(make_app):
    app = throttled(make_app, AUTHSVC_RATELIMIT_LOGIN_USERNAME="2/minute")
    client = app.test_client()
    signup(client)
    assert [login(client).status_code for _ in range(5)] == [200] * 5


def test_unknown_usernames_are_counted_too(make_app):
    client = throttled(make_app, AUTHSVC_RATELIMIT_LOGIN_USERNAME="2/minute").test_client()
    for _ in range(2):
        assert login(client, username="ghost").status_code == 401
    # Same answer shape as for an existing account under attack: nothing to enumerate.
    assert_rate_limited(login(client, username="ghost"))


def test_refresh_per_address(make_app):
    client = throttled(make_app, AUTHSVC_RATELIMIT_REFRESH_ADDRESS="2/minute").test_client()
    tokens = signup(client)
    for _ in range(2):
        tokens = client.post("/refresh", headers=bearer(tokens["refresh_token"])).get_json()
    assert_rate_limited(client.post("/refresh", headers=bearer(tokens["refresh_token"])))


@pytest.mark.parametrize(("trusted", "separate"), [("0", False), ("1", True)])
def test_forwarded_for_counts_only_behind_trusted_proxies(make_app, trusted, separate):
    app = throttled(
        make_app, AUTHSVC_RATELIMIT_SIGNUP_ADDRESS="1/minute", AUTHSVC_TRUSTED_PROXIES=trusted
    )
    client = app.test_client()
    first = client.post(
        "/signup",
        json={"username": "first", "password": PASSWORD},
        headers={"X-Forwarded-For": "203.0.113.1"},
    )
    assert first.status_code == 201
    second = client.post(
        "/signup",
        json={"username": "second", "password": PASSWORD},
        headers={"X-Forwarded-For": "203.0.113.2"},
    )
    assert second.status_code == (201 if separate else 429)


def test_disabled_means_no_limits(make_app):
    client = make_app(
        AUTHSVC_RATELIMIT_ENABLED="false", AUTHSVC_RATELIMIT_SIGNUP_ADDRESS="1/minute"
    ).test_client()
    for index in range(3):
        signup(client, username=f"user{index}")


def test_counters_are_shared_through_redis(make_app, backend):
    """Two replicas on one Redis count together; without Redis each process counts alone."""
    limits = {"AUTHSVC_RATELIMIT_LOGIN_ADDRESS": "2/minute"}
    first = throttled(make_app, **limits)
    second = throttled(make_app, **limits)
    signup(first.test_client())
    assert login(first.test_client()).status_code == 200
    assert login(second.test_client()).status_code == 200
    third = login(first.test_client()).status_code
    fourth = login(second.test_client()).status_code
    if backend == "postgres":  # PostgreSQL + Redis
        assert (third, fourth) == (429, 429)
    else:  # memory storage: each process allows its own two
        assert (third, fourth) == (200, 200)


def test_unreachable_redis_fails_closed(make_app):
    app = throttled(make_app, REDIS_URL="redis://127.0.0.1:1/0")
    response = login(app.test_client())
    assert_problem(response, 503, "unavailable")
    assert response.headers["Retry-After"].isdigit()
