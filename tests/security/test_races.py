"""Races an attacker would run against real gunicorn, with real concurrency and bounded waits.

A login in flight with the old password must not survive a password change or a disable that
commits while it hashes (DESIGN §5): the argon2 cost is raised here so a login takes long enough
to overlap the change deterministically.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import requests

from authsvc.services import admin
from authsvc.store import sessions as session_store
from tests.support.helpers import OTHER_PASSWORD, PASSWORD
from tests.support.servers import Service, app_beside

pytestmark = pytest.mark.slow

# About half a second per hash on this machine when idle: long enough to land a change inside.
SLOW_ARGON2 = {"AUTHSVC_ARGON2_MEMORY_KIB": "16384", "AUTHSVC_ARGON2_TIME_COST": "30"}


def _login(service: Service, password: str) -> requests.Response:
    return requests.post(
        service.url("/login"), json={"username": "alice", "password": password}, timeout=60
    )


def _timed_login(service: Service) -> float:
    """Seconds one login with PASSWORD takes now (a loaded machine stretches the overlapped
    request and this measure alike)."""
    started = time.monotonic()
    assert _login(service, PASSWORD).status_code == 200
    return time.monotonic() - started


def _overlapping(
    request: Callable[[], requests.Response], change: Callable[[], None], after: float
) -> requests.Response:
    """``request`` in a thread, ``change`` ``after`` seconds into it; the request's answer."""
    answers: list[requests.Response] = []
    thread = threading.Thread(target=lambda: answers.append(request()))
    thread.start()
    time.sleep(after)
    change()
    thread.join(timeout=120)
    assert not thread.is_alive() and answers, "the request did not answer"
    return answers[0]


def _login_overlapping(service: Service, change: Callable[[], None]) -> requests.Response:
    """Log in with PASSWORD while ``change`` runs a third of the way through the login's hash."""
    duration = _timed_login(service)
    return _overlapping(lambda: _login(service, PASSWORD), change, duration / 3)


def _live_sessions(service: Service) -> int:
    app = app_beside(service)
    with app.app_context():
        user = admin.find_user("alice")
        return len(session_store.live_of_user(user.id))


@pytest.mark.parametrize("change", ["set_password", "disable"])
def test_a_login_in_flight_gets_no_session_after_the_password_changes(start_service, change):
    with start_service(**SLOW_ARGON2) as service:
        signup = requests.post(
            service.url("/signup"), json={"username": "alice", "password": PASSWORD}, timeout=60
        )
        assert signup.status_code == 201
        operator = app_beside(service)

        def run_change() -> None:
            with operator.app_context():
                if change == "set_password":
                    admin.set_password("alice", OTHER_PASSWORD)
                else:
                    admin.disable_user("alice")

        answer = _login_overlapping(service, run_change)
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"] == "invalid_credentials"
        assert _live_sessions(service) == 0
        if change == "set_password":
            assert _login(service, OTHER_PASSWORD).status_code == 200
        assert "credentials_changed" in service.logs()


def test_a_login_that_upgrades_an_outdated_hash_gets_no_session_after_a_reset(start_service):
    """The login path that rehashes (stored parameters older than the configured ones) checks
    the same condition inside its transaction."""
    with start_service() as service:  # the cheap default cost
        operator = app_beside(service, **SLOW_ARGON2)  # stores a slow, now outdated, hash
        with operator.app_context():
            admin.create_user("alice", PASSWORD, [])

        quick_operator = app_beside(service)  # its own new hash must not take long

        def reset() -> None:
            with quick_operator.app_context():
                admin.set_password("alice", OTHER_PASSWORD)

        # A first login, timed, upgrades the hash; then a slow, outdated one is stored again.
        duration = _timed_login(service)
        with operator.app_context():
            admin.set_password("alice", PASSWORD)
        answer = _overlapping(lambda: _login(service, PASSWORD), reset, duration / 3)
        assert answer.status_code == 401, answer.text
        assert _live_sessions(service) == 0


@pytest.mark.parametrize("change", ["reset", "logout_global"])
def test_a_password_change_in_flight_loses_to_a_reset_or_a_logout(start_service, change):
    """Someone holding a stolen token and the old password sends POST /password; meanwhile the
    owner (or an operator) resets the password, or logs every session out. The change in flight
    must not land: it checked a password, or asked from a session, that is no longer current."""
    with start_service(**SLOW_ARGON2) as service:
        stolen = requests.post(
            service.url("/signup"), json={"username": "alice", "password": PASSWORD}, timeout=60
        ).json()
        owner = _login(service, PASSWORD)
        duration = _timed_login(service)
        operator = app_beside(service)
        attacker_password = "the attacker's own passphrase"
        body = {"current_password": PASSWORD, "new_password": attacker_password}
        headers = {"Authorization": f"Bearer {stolen['access_token']}"}

        def owner_acts() -> None:
            if change == "reset":
                with operator.app_context():
                    admin.set_password("alice", OTHER_PASSWORD)
                return
            owner_headers = {"Authorization": f"Bearer {owner.json()['access_token']}"}
            logout = requests.post(
                service.url("/logout"), json={"scope": "global"}, headers=owner_headers, timeout=30
            )
            assert logout.status_code == 204

        answer = _overlapping(  # the owner acts inside the change's first argon2 run
            lambda: requests.post(service.url("/password"), json=body, headers=headers, timeout=60),
            owner_acts,
            duration / 2,
        )
        assert answer.status_code == 401, answer.text
        assert _login(service, attacker_password).status_code == 401
        expected = OTHER_PASSWORD if change == "reset" else PASSWORD
        assert _login(service, expected).status_code == 200
