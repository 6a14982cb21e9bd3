"""Admins in tests: an account holding the admin role, logged in at aal2 with a TOTP factor,
and operators' admin tokens from `flask admin token`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from authsvc.services import admin_tokens
from tests.support.helpers import PASSWORD, bearer, login
from tests.support.mfa import Clock, Enrolled, enrol_totp, mfa_token


@dataclass
class Admin:
    user_id: str
    username: str
    access_token: str  # aal2
    refresh_token: str
    totp: Enrolled

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.access_token)


def create_user(runner: FlaskCliRunner, username: str, *roles: str) -> None:
    args = ["users", "create", username, "--password-stdin"]
    for role in roles:
        args += ["--role", role]
    result = runner.invoke(args=args, input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output


def aal1_login(client: FlaskClient, runner: FlaskCliRunner, username: str, *roles: str) -> str:
    """A new account with ``roles``, logged in with its password alone: an aal1 access token."""
    create_user(runner, username, *roles)
    return str(login(client, username)["access_token"])


def make_admin(
    client: FlaskClient, runner: FlaskCliRunner, clock: Clock, username: str = "root"
) -> Admin:
    """A new admin with an authenticator app, logged in with password and code (aal2)."""
    first = aal1_login(client, runner, username, "admin")
    enrolled = enrol_totp(client, first, clock)
    clock.advance()  # the enrolment spent this step's code
    response = client.post(
        "/login/mfa",
        json={"mfa_token": mfa_token(client, username), "code": clock.code(enrolled.secret)},
    )
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    assert body["user"]["roles"] == ["admin"]
    return Admin(
        body["user"]["id"], username, body["access_token"], body["refresh_token"], enrolled
    )


def operator_token(app: Flask, name: str = "ops", ttl: int = 600) -> str:
    """What `flask admin token --name NAME` prints."""
    with app.app_context():
        token, _jti, _expires = admin_tokens.issue(name, ttl)
    return token
