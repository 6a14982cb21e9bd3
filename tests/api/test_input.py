"""DESIGN §2 input handling: every malformed body is a 4xx problem, never a 500 or a stack trace."""

from __future__ import annotations

import json

import pytest
from flask import session

from tests.support.helpers import PASSWORD, assert_problem, bearer, signup

BODY_ENDPOINTS = ["/signup", "/login"]


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "multipart/form-data",
    ],
)
def test_non_json_content_type_is_415(client, path, content_type):
    body = json.dumps({"username": "alice", "password": PASSWORD})
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(path, data=body, headers=headers)
    assert_problem(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
def test_json_with_charset_parameter_is_accepted(client, path):
    signup(client)
    body = json.dumps({"username": "alice", "password": PASSWORD})
    response = client.post(path, data=body, content_type="application/json; charset=utf-8")
    assert response.status_code in (200, 409)


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
def test_body_over_64_kib_is_413_before_any_work(client, path, app):
    body = json.dumps({"username": "alice", "password": "x" * (70 * 1024)})
    response = client.post(path, data=body, content_type="application/json")
    assert_problem(response, 413, "payload_too_large")
    with app.app_context():
        from authsvc.extensions import db
        from authsvc.models import User

        assert db.session.query(User).count() == 0


def test_body_just_under_the_limit_is_parsed(client):
    # 64 KiB is the limit; a body below it reaches validation (and fails on length, as 400).
    body = json.dumps({"username": "alice", "password": "x" * (60 * 1024)})
    response = client.post("/signup", data=body, content_type="application/json")
    assert_problem(response, 400, "invalid_request")


MALFORMED = {
    "truncated": b'{"username": "alice", "password": ',
    "not json": b"username=alice",
    "trailing garbage": b'{"username": "alice", "password": "a long and unusual passphrase"} x',
    "invalid utf-8": b'{"username": "\xff\xfe", "password": "a long and unusual passphrase"}',
    "NaN": b'{"username": "alice", "password": NaN}',
    "Infinity": b'{"username": "alice", "password": Infinity}',
    "-Infinity": b'{"username": "alice", "password": -Infinity}',
    "duplicate keys": b'{"username": "alice", "username": "bob", "password": "x"}',
    "array": b'["alice", "a long and unusual passphrase"]',
    "string": b'"alice"',
    "number": b"42",
    "null": b"null",
    "empty": b"",
    "whitespace": b"   ",
    "deep nesting": b'{"username": ' + b"[" * 50 + b"]" * 50 + b', "password": "x"}',
    "very deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "unknown field": b'{"username": "alice", "password": "a long passphrase!", "admin": true}',
    "missing password": b'{"username": "alice"}',
    "missing username": b'{"password": "a long and unusual passphrase"}',
    "number username": b'{"username": 12345, "password": "a long and unusual passphrase"}',
    "bool password": b'{"username": "alice", "password": true}',
    "null password": b'{"username": "alice", "password": null}',
    "list password": b'{"username": "alice", "password": ["a long and unusual passphrase"]}',
    "object username": b'{"username": {"$ne": null}, "password": "a long and unusual passphrase"}',
}


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_bodies_are_400(client, path, body):
    response = client.post(path, data=body, content_type="application/json")
    if len(body) > 64 * 1024:
        assert_problem(response, 413, "payload_too_large")
        return
    problem = assert_problem(response, 400, "invalid_request")
    # Our own words, never a library's message or a stack trace.
    assert "Traceback" not in problem["detail"]
    assert "pydantic" not in problem["detail"].lower()
    assert "Expecting" not in problem["detail"]


def test_unknown_field_error_names_the_field(client):
    response = client.post(
        "/signup", json={"username": "alice", "password": PASSWORD, "is_admin": True}
    )
    problem = assert_problem(response, 400, "invalid_request")
    assert "is_admin" in problem["detail"]


def test_wrong_type_error_names_the_field(client):
    response = client.post("/login", json={"username": "alice", "password": 1234567890123})
    problem = assert_problem(response, 400, "invalid_request")
    assert "password" in problem["detail"]


def test_login_checks_only_lengths(client):
    # A username that breaks the signup rules is simply an unknown user at login.
    response = client.post("/login", json={"username": "a b/c\u202e", "password": PASSWORD})
    assert_problem(response, 401, "invalid_credentials")


@pytest.mark.parametrize(
    "body",
    [
        {"username": "a" * 255, "password": PASSWORD},
        {"username": "alice", "password": "p" * 129},
    ],
    ids=["username too long", "password too long"],
)
def test_login_over_maximum_lengths_is_400(client, body):
    assert_problem(client.post("/login", json=body), 400, "invalid_request")


OPTIONAL_BODY = [
    ("/logout", "access_token"),
    ("/refresh", "refresh_token"),
]


@pytest.mark.parametrize(("path", "token_name"), OPTIONAL_BODY)
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json"])
def test_empty_body_counts_as_no_body(client, path, token_name, content_type):
    tokens = signup(client)
    headers = bearer(tokens[token_name])
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post(path, data=b"", headers=headers)
    assert response.status_code in (200, 204), response.get_data(as_text=True)


@pytest.mark.parametrize(("path", "token_name"), OPTIONAL_BODY)
def test_optional_body_is_still_strict(client, path, token_name):
    tokens = signup(client)
    response = client.post(path, json={"surprise": 1}, headers=bearer(tokens[token_name]))
    assert_problem(response, 400, "invalid_request")


def test_logout_unknown_scope_is_400(client):
    tokens = signup(client)
    response = client.post(
        "/logout", json={"scope": "everything"}, headers=bearer(tokens["access_token"])
    )
    assert_problem(response, 400, "invalid_request")


def test_password_change_body_is_strict(client):
    tokens = signup(client)
    headers = bearer(tokens["access_token"])
    assert_problem(
        client.post("/password", data=b"x", headers=headers, content_type="text/plain"),
        415,
        "unsupported_media_type",
    )
    assert_problem(
        client.post("/password", json={"new_password": "x" * 20}, headers=headers),
        400,
        "invalid_request",
    )


def test_unknown_path_and_method_are_problems(client):
    assert_problem(client.get("/nope"), 404, "not_found")
    response = client.get("/login")
    assert_problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_malformed_session_id_is_404(client):
    tokens = signup(client)
    response = client.delete("/sessions/not-a-uuid", headers=bearer(tokens["access_token"]))
    assert_problem(response, 404, "not_found")


def test_flask_cookie_sessions_are_off(app, client):
    # A forged Flask session cookie is never read, no answer sets one, and nothing can write one.
    client.set_cookie("session", "eyJ1c2VyIjoiYWRtaW4ifQ.forged.signature")
    tokens = signup(client)
    answer = client.get("/me", headers=bearer(tokens["access_token"]))
    assert answer.status_code == 200
    assert "Set-Cookie" not in answer.headers
    with app.test_request_context("/"):
        assert not session
        with pytest.raises(RuntimeError):
            session["user"] = "admin"
