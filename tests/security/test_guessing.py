"""Guessing secrets against real gunicorn (DESIGN §5): every endpoint that checks one is
throttled, the limit is reserved before the check (N concurrent guesses never evaluate more than
the limit), and per-address limits count an IPv6 client by its /64."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from authsvc.security.throttling import address_key
from tests.support.helpers import OTHER_PASSWORD, PASSWORD
from tests.support.servers import Service

pytestmark = pytest.mark.slow

# Slow enough that twenty guesses are all in flight together.
SLOW_ARGON2 = {"AUTHSVC_ARGON2_MEMORY_KIB": "8192", "AUTHSVC_ARGON2_TIME_COST": "20"}
GENEROUS = {
    "AUTHSVC_RATELIMIT_ENABLED": "true",
    "AUTHSVC_RATELIMIT_LOGIN_ADDRESS": "1000/minute",
    "AUTHSVC_RATELIMIT_SIGNUP_ADDRESS": "1000/minute",
    "AUTHSVC_RATELIMIT_PASSWORD_ADDRESS": "1000/minute",
}


def _post(service: Service, path: str, **kwargs) -> requests.Response:
    return requests.post(service.url(path), timeout=60, **kwargs)


def _signup(service: Service, username: str = "alice", **kwargs) -> dict:
    answer = _post(service, "/signup", json={"username": username, "password": PASSWORD}, **kwargs)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _statuses(calls) -> list[int]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return sorted(future.result().status_code for future in [pool.submit(c) for c in calls])


def test_concurrent_wrong_passwords_never_evaluate_more_than_the_limit(start_service):
    limits = {"AUTHSVC_RATELIMIT_LOGIN_USERNAME": "10/minute;100/hour"}
    with start_service(**SLOW_ARGON2, **GENEROUS, **limits) as service:
        _signup(service)
        wrong = {"username": "alice", "password": OTHER_PASSWORD}
        statuses = _statuses([lambda: _post(service, "/login", json=wrong)] * 20)
        assert set(statuses) == {401, 429}, statuses
        assert statuses.count(401) == 10, statuses  # never more evaluated than the limit
        right = _post(service, "/login", json={"username": "alice", "password": PASSWORD})
        assert right.status_code == 429 and int(right.headers["Retry-After"]) <= 60


def test_a_successful_login_gives_its_reservation_back(start_service):
    limits = {"AUTHSVC_RATELIMIT_LOGIN_USERNAME": "3/minute"}
    with start_service(**GENEROUS, **limits) as service:
        _signup(service)
        right = {"username": "alice", "password": PASSWORD}
        assert [_post(service, "/login", json=right).status_code for _ in range(6)] == [200] * 6
        wrong = {"username": "alice", "password": OTHER_PASSWORD}
        assert [_post(service, "/login", json=wrong).status_code for _ in range(4)] == [
            401,
            401,
            401,
            429,
        ]


def test_password_change_is_throttled_per_user_and_per_address(start_service):
    limits = {
        "AUTHSVC_RATELIMIT_LOGIN_USERNAME": "5/minute",
        "AUTHSVC_RATELIMIT_PASSWORD_ADDRESS": "30/minute",
    }
    with start_service(**SLOW_ARGON2, **{**GENEROUS, **limits}) as service:
        token = _signup(service)["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        guess = {"current_password": OTHER_PASSWORD, "new_password": "a brand new passphrase"}
        change = lambda: _post(service, "/password", json=guess, headers=headers)  # noqa: E731
        statuses = _statuses([change] * 12)
        assert statuses.count(401) == 5 and statuses.count(429) == 7, statuses
        # The user's budget is spent: the right current password waits too.
        right = {"current_password": PASSWORD, "new_password": "a brand new passphrase"}
        assert _post(service, "/password", json=right, headers=headers).status_code == 429
        # A separate budget from the login's: a stranger spraying logins at the username does
        # not block the owner's change, and the guesses above did not block the owner's login.
        login = {"username": "alice", "password": PASSWORD}
        assert _post(service, "/login", json=login).status_code == 200
    with start_service(**{**GENEROUS, **limits}) as service:
        token = _signup(service, "bob")["access_token"]
        wrong = {"username": "bob", "password": OTHER_PASSWORD}
        assert {_post(service, "/login", json=wrong).status_code for _ in range(6)} >= {429}
        right = {"current_password": PASSWORD, "new_password": "a brand new passphrase"}
        headers = {"Authorization": f"Bearer {token}"}
        assert _post(service, "/password", json=right, headers=headers).status_code == 204
    with start_service(**{**GENEROUS, "AUTHSVC_RATELIMIT_PASSWORD_ADDRESS": "3/minute"}) as service:
        token = _signup(service, "carol")["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        statuses = [
            _post(service, "/password", json={}, headers=headers).status_code for _ in range(4)
        ]
        assert statuses == [400, 400, 400, 429]  # every request counts per address


CLIENT, SECRET = "orders", "orders-secret-0123456789"


def _introspect(service: Service, secret: str, address: str = "198.51.100.7"):
    return _post(
        service,
        "/introspect",
        data={"token": "x"},
        auth=(CLIENT, secret),
        headers={"X-Forwarded-For": address},
    )


def test_introspection_secrets_are_throttled_per_client_and_per_address(start_service):
    settings = {
        **GENEROUS,
        "AUTHSVC_TRUSTED_PROXIES": "1",
        "AUTHSVC_INTROSPECTION_CLIENTS": f"{CLIENT}:{SECRET},other:other-secret-0123456789",
        "AUTHSVC_RATELIMIT_CLIENT_FAILURES": "5/minute",
    }
    with start_service(**settings) as service:
        # A busy resource server is never slowed down by its own concurrency.
        assert set(_statuses([lambda: _introspect(service, SECRET)] * 12)) == {200}
        # Guesses from one address: 5 failures, then 429 even for the right secret.
        statuses = [_introspect(service, "guess-guess-guess-1").status_code for _ in range(7)]
        assert statuses == [401] * 5 + [429] * 2
        assert _introspect(service, SECRET).status_code == 429
        # Guessing a client id from many addresses does not lock the real client out.
        for index in range(1, 7):
            for _ in range(5):
                _introspect(service, "guess-guess-guess-2", address=f"203.0.113.{index}")
        assert _introspect(service, SECRET, address="192.0.2.44").status_code == 200
        # Another client from a fresh address is unaffected.
        other = _post(
            service,
            "/introspect",
            data={"token": "x"},
            auth=("other", "other-secret-0123456789"),
            headers={"X-Forwarded-For": "203.0.113.10"},
        )
        assert other.status_code == 200


def test_ipv6_clients_are_counted_by_their_64(start_service):
    settings = {
        **GENEROUS,
        "AUTHSVC_TRUSTED_PROXIES": "1",
        "AUTHSVC_RATELIMIT_SIGNUP_ADDRESS": "10/minute",
    }
    with start_service(**settings) as service:
        statuses = [
            _post(
                service,
                "/signup",
                json={"username": f"user{index}", "password": PASSWORD},
                headers={"X-Forwarded-For": f"2001:db8:1:2::{index:x}"},
            ).status_code
            for index in range(1, 16)
        ]
        assert statuses == [201] * 10 + [429] * 5
        # The next /64 is another subscriber.
        _signup(service, "elsewhere", headers={"X-Forwarded-For": "2001:db8:1:3::1"})


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.5", "203.0.113.5"),  # an IPv4 client on a dual-stack socket
        ("unknown", "unknown"),
    ],
)
def test_address_keys(address, key):
    assert address_key(address) == key
