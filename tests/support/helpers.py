"""Small helpers the tests share: accounts, headers, problem assertions, forged tokens."""

from __future__ import annotations

from typing import Any

import jwt
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authsvc.runtime import runtime

PASSWORD = "a long and unusual passphrase"
OTHER_PASSWORD = "another entirely different passphrase"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signup(
    client: FlaskClient, username: str = "alice", password: str = PASSWORD, **kwargs: Any
) -> dict[str, Any]:
    response = client.post("/signup", json={"username": username, "password": password}, **kwargs)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def login(
    client: FlaskClient, username: str = "alice", password: str = PASSWORD, **kwargs: Any
) -> dict[str, Any]:
    response = client.post("/login", json={"username": username, "password": password}, **kwargs)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def assert_problem(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and stable code."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def assert_invalid_token(response: TestResponse, code: str = "invalid_token") -> None:
    assert_problem(response, 401, code)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc", error="invalid_token"'


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def sign_with_service_key(
    app: Flask, claims: dict[str, Any], headers: dict[str, Any] | None = None
) -> str:
    """A token signed with the service's own active key: for tests that need a validly signed
    token with chosen claims (expired, missing claims, wrong audience...)."""
    with app.app_context():
        key = runtime().keyring.signing_key()
        return jwt.encode(
            claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid, **(headers or {})}
        )
