"""Logs: one JSON line per request and per security event, with the request id, and never a
password or a whole token (DESIGN §7)."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time

import pytest
from sqlalchemy import text

from authsvc.extensions import db
from authsvc.observability import JsonFormatter
from tests.support.helpers import OTHER_PASSWORD, PASSWORD, bearer, claims_of, login, signup

JWT_SHAPE = re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+")


@pytest.fixture
def log_lines():
    """Every line the authsvc loggers write, formatted exactly as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("authsvc")
    logger.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)


def test_a_full_run_logs_no_password_and_no_token(make_app, log_lines):
    app = make_app(
        AUTHSVC_INTROSPECTION_CLIENTS="svc:svc-secret-value-123",
        AUTHSVC_REFRESH_REUSE_GRACE="0",
    )
    client = app.test_client()
    secrets = {PASSWORD, OTHER_PASSWORD, "svc-secret-value-123", "wrong password attempt"}
    first = signup(client, username="logged")
    second = login(client, username="logged")
    client.post("/login", json={"username": "logged", "password": "wrong password attempt"})
    client.post("/login", json={"username": "nobody", "password": "wrong password attempt"})
    refreshed = client.post("/refresh", headers=bearer(first["refresh_token"])).get_json()
    time.sleep(1.05)
    client.post("/refresh", headers=bearer(first["refresh_token"]))  # reuse: session revoked
    client.get("/me", headers=bearer(second["access_token"]))
    client.get("/sessions", headers=bearer(second["access_token"]))
    basic = base64.b64encode(b"svc:svc-secret-value-123").decode()
    client.post(
        "/introspect",
        data={"token": second["access_token"]},
        headers={"Authorization": f"Basic {basic}"},
    )
    client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": OTHER_PASSWORD},
        headers=bearer(second["access_token"]),
    )
    client.post("/logout", headers=bearer(second["access_token"]))
    client.get("/me", headers=bearer("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.forged"))
    runner = app.test_cli_runner()
    runner.invoke(args=["keys", "rotate"])
    runner.invoke(args=["users", "disable", "logged"])

    lines = log_lines()
    text = "\n".join(json.dumps(line) for line in lines)
    for secret in secrets:
        assert secret not in text
    for token in (first, second, refreshed):
        assert token["access_token"] not in text and token["refresh_token"] not in text
    assert not JWT_SHAPE.search(text)
    assert "$argon2" not in text

    events = [line.get("event") for line in lines]
    for event in (
        "signup",
        "login",
        "login_failed",
        "refresh_reuse_detected",
        "password_changed",
        "session_revoked",
        "key_published",
        "user_disabled",
    ):
        assert event in events, event
    requests = [line for line in lines if line.get("event") == "request"]
    assert len(requests) == 12
    assert all(line["request_id"] for line in requests)


def test_security_events_carry_the_request_id(client, log_lines):
    client.post(
        "/login",
        json={"username": "ghost", "password": PASSWORD},
        headers={"X-Request-Id": "trace-42"},
    )
    failed = [line for line in log_lines() if line.get("event") == "login_failed"]
    assert failed and failed[0]["request_id"] == "trace-42"
    request_line = [line for line in log_lines() if line.get("event") == "request"][-1]
    assert request_line["request_id"] == "trace-42"
    assert request_line["status"] == 401
    assert request_line["path"] == "/login"


def test_unhandled_errors_are_logged_without_leaking_to_the_client(app, client, log_lines):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    response = client.get("/boom")
    assert response.status_code == 500
    assert response.get_json()["code"] == "internal_error"
    assert "secret internal detail" not in response.get_data(as_text=True)
    errors = [line for line in log_lines() if line.get("level") == "error"]
    assert errors and errors[0]["exception"] == "RuntimeError"


def test_a_failed_statement_is_logged_without_its_values(app, client, log_lines):
    # A database error's text carries the statement's parameters (SQLAlchemy) and, on
    # PostgreSQL, the failing row's values (the server's DETAIL): a password hash, a token id.
    # None of them may reach the log. (PostgreSQL cuts values at 64 bytes: the secret is shorter.)
    secret = "$argon2id$v=19$m=19456$leaked-salt$leaked-hash"

    @app.post("/boom")
    def boom():
        # NOT NULL columns left out: an IntegrityError, which nothing expects here (a 500).
        db.session.execute(
            text("INSERT INTO users (password_hash) VALUES (:password_hash)"),
            {"password_hash": secret},
        )
        return ""

    response = client.post("/boom", headers={"X-Request-Id": "boom-1"})
    assert response.status_code == 500
    assert response.get_json()["code"] == "internal_error"
    errors = [line for line in log_lines() if line.get("level") == "error"]
    assert len(errors) == 1
    error = errors[0]
    assert error["exception"] == "IntegrityError" and error["request_id"] == "boom-1"
    assert "INSERT INTO users" in error["statement"]  # the statement, yes
    assert "boom" in error["traceback"]  # and where it failed
    logged = json.dumps(log_lines())
    assert secret not in logged and "leaked" not in logged  # its values, no
    assert "Failing row" not in logged


def test_reuse_event_names_the_session_not_the_token(make_app, log_lines):
    app = make_app(AUTHSVC_REFRESH_REUSE_GRACE="0")
    client = app.test_client()
    tokens = signup(client)
    client.post("/refresh", headers=bearer(tokens["refresh_token"]))
    time.sleep(1.05)
    client.post("/refresh", headers=bearer(tokens["refresh_token"]))
    reuse = [line for line in log_lines() if line.get("event") == "refresh_reuse_detected"]
    assert reuse[0]["session_id"] == claims_of(tokens["refresh_token"])["sid"]
    assert reuse[0]["presented_generation"] == 0 and reuse[0]["current_generation"] == 1
