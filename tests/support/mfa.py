"""TOTP in tests: a clock the codes follow, and enrolling an authenticator app over the API."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient

from authsvc.security import totp
from tests.support.helpers import PASSWORD, bearer


class Clock:
    """The time TOTP steps are counted from (``authsvc.security.totp.clock``), moved by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The middle of a step, so a test that takes a few seconds stays within it.
        self.now = (time.time() // totp.PERIOD) * totp.PERIOD + totp.PERIOD / 2
        monkeypatch.setattr(totp, "clock", lambda: self.now)

    @property
    def step(self) -> int:
        return totp.current_step(self.now)

    def advance(self, steps: int = 1) -> None:
        self.now += steps * totp.PERIOD

    def code(self, secret: str, offset: int = 0) -> str:
        """What the app shows now (``offset`` steps ahead or behind)."""
        return totp.code_at(secret, self.step + offset)


@dataclass
class Enrolled:
    factor_id: str
    secret: str
    recovery_codes: list[str]


def enrol_totp(
    client: FlaskClient, access_token: str, clock: Clock, password: str = PASSWORD
) -> Enrolled:
    """Add and confirm an authenticator app (with the code of the clock's current step)."""
    headers = bearer(access_token)
    started = client.post("/mfa/totp", json={"current_password": password}, headers=headers)
    assert started.status_code == 201, started.get_json()
    body = started.get_json()
    confirmed = client.post(
        f"/mfa/totp/{body['id']}/confirm",
        json={"code": clock.code(body["secret"])},
        headers=headers,
    )
    assert confirmed.status_code == 200, confirmed.get_json()
    return Enrolled(body["id"], body["secret"], confirmed.get_json()["recovery_codes"])


def mfa_token(client: FlaskClient, username: str = "alice", password: str = PASSWORD) -> str:
    """The first step of a login of a user with a factor."""
    response = client.post("/login", json={"username": username, "password": password})
    assert response.status_code == 403, response.get_json()
    body: dict[str, Any] = response.get_json()
    assert body["code"] == "mfa_required"
    return str(body["mfa_token"])
