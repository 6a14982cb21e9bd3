"""Schemathesis against /openapi.json, in process: no 5xx, and every response as documented.

``test_fuzz`` runs every operation of the generated document through schemathesis's examples,
coverage and fuzzing phases (positive and negative data), bounded and derandomized, on SQLite and
on PostgreSQL + Redis. Each response must pass four checks: not a 5xx, a documented status code, a
documented Content-Type, a body matching the documented model.

Authenticated operations get valid credentials, so the fuzzer reaches the views' own validation
instead of stopping at 401: read-only operations share one account's access token; operations that
change state (logout, password, session revocation) and refresh (rotation makes a refresh token
single-use) get a fresh account per case, so no case can revoke what a later case depends on;
/introspect gets the HTTP Basic credentials of a configured client.

``test_contract`` walks the success paths (and the main error paths) that random data rarely
reaches, through the same checks, and the last tests pin what the document must say (problem+json
errors, 429 and 503 where they happen, optional bodies, the introspection client credentials).
"""

from __future__ import annotations

import base64
import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis import Case, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from authsvc import create_app
from authsvc.extensions import db
from authsvc.services import admin_tokens
from tests.support.helpers import OTHER_PASSWORD, PASSWORD
from tests.support.servers import free_port
from tests.support.settings import TABLES, AppFactory, base_config, migrate

# Hypothesis examples per operation in the fuzzing phase; the examples and coverage phases add
# their own deterministic cases. The whole module takes about 15 s on both backends.
MAX_EXAMPLES = 50
INTROSPECTION_CLIENT = ("fuzz", "fuzz-client-secret-0123456789")
PROBLEM_JSON = "application/problem+json"

# Operations that change what a shared token depends on: each case gets its own account.
STATE_CHANGING = {
    ("POST", "/logout"),
    ("POST", "/password"),
    ("DELETE", "/sessions/{session_id}"),
    ("DELETE", "/me"),
}
# An operator's admin token (`flask admin token`) for the admin operations: an hour outlasts
# the run.
OPERATOR_TTL = 3600


def _openapi_document() -> dict[str, Any]:
    """/openapi.json of the service as create_app builds it (serving it needs no database)."""
    with tempfile.TemporaryDirectory() as directory:
        app = create_app({**base_config(), "DATABASE_URL": f"sqlite:///{directory}/spec.db"})
        document = app.test_client().get("/openapi.json").get_json()
        with app.app_context():
            db.engine.dispose()
    return document


# Loaded at import, so that every operation is a test item of its own (`test_fuzz[POST /login]`).
schema = schemathesis.openapi.from_dict(_openapi_document())


# -- checks --------------------------------------------------------------------------------------


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
DOCUMENTATION_CHECKS = CHECKS[1:]


# -- accounts and apps ---------------------------------------------------------------------------


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Accounts:
    """Signs up accounts on the app under test, each with a live token pair."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client()
        self.counter = itertools.count()
        self.shared = self.signup()
        with app.app_context():
            self.operator = admin_tokens.issue("fuzz", OPERATOR_TTL)[0]

    def signup(self) -> dict[str, Any]:
        username = f"fuzz-{next(self.counter)}@example.com"
        response = self.client.post("/signup", json={"username": username, "password": PASSWORD})
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    def headers_for(self, case: Case) -> dict[str, str]:
        key = (case.method.upper(), case.path)
        if key == ("POST", "/introspect"):
            return {"Authorization": basic(*INTROSPECTION_CLIENT)}
        if key == ("POST", "/refresh"):
            return bearer(self.signup()["refresh_token"])
        if key in STATE_CHANGING:
            return bearer(self.signup()["access_token"])
        if case.path.startswith("/admin/"):
            return bearer(self.operator)
        if case.operation.definition.raw.get("security"):
            return bearer(self.shared["access_token"])
        return {}


def _fuzz_config(backend: str, request: pytest.FixtureRequest, directory: Path) -> dict[str, str]:
    config = {
        **base_config(),
        # Throttling is not under test here: a signup per case would soon be 429.
        "AUTHSVC_RATELIMIT_ENABLED": "false",
        "AUTHSVC_INTROSPECTION_CLIENTS": ":".join(INTROSPECTION_CLIENT),
    }
    if backend == "sqlite":
        return {**config, "DATABASE_URL": f"sqlite:///{directory / 'authsvc.db'}"}
    url = request.getfixturevalue("postgres_url")
    redis_url = request.getfixturevalue("redis_url")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
    redis.Redis.from_url(redis_url).flushdb()
    return {**config, "DATABASE_URL": url, "REDIS_URL": redis_url}


@pytest.fixture(scope="module")
def accounts(
    fuzz_backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Accounts]:
    """One app (and database) per backend for the whole fuzz run."""
    app = create_app(_fuzz_config(fuzz_backend, request, tmp_path_factory.mktemp("fuzz")))
    if fuzz_backend == "sqlite":
        migrate(app)
    yield Accounts(app)
    with app.app_context():
        db.engine.dispose()


# -- the fuzz run --------------------------------------------------------------------------------


@schema.parametrize()
# Besides the backends, this parametrization gives every item a distinct node id: under pytest 9
# schemathesis's items for an unparametrized test all share the bare function name.
@pytest.mark.parametrize(
    "fuzz_backend",
    ["sqlite", pytest.param("postgres", marks=pytest.mark.services)],
    scope="module",
)
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run: CI is reproducible
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_fuzz(case: Case, accounts: Accounts, fuzz_backend: str) -> None:
    case.call_and_validate(headers=accounts.headers_for(case), checks=CHECKS, app=accounts.app)


# -- explicit paths through the same checks -------------------------------------------------------


def call(
    app: Flask,
    method: str,
    path: str,
    status: int,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    path_parameters: dict[str, str] | None = None,
    checks: list | None = None,
) -> Response:
    """Send one request built from the document's operation, check it, and expect ``status``."""
    extra: dict[str, Any] = {"body": body, "media_type": "application/json"} if body else {}
    case = schema[path][method].Case(
        headers=headers or {}, path_parameters=path_parameters or {}, **extra
    )
    response = case.call(app=app)
    assert response.status_code == status, response.text
    case.validate_response(response, checks=checks or CHECKS)
    return response


@pytest.fixture
def contract_app(make_app: AppFactory) -> Flask:
    return make_app(AUTHSVC_INTROSPECTION_CLIENTS=":".join(INTROSPECTION_CLIENT))


def test_contract(contract_app: Flask) -> None:
    app = contract_app
    credentials = {"username": "contract@example.com", "password": PASSWORD}
    for path in (
        "/healthz",
        "/readyz",
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
    ):
        call(app, "GET", path, 200)

    first = call(app, "POST", "/signup", 201, body=credentials).json()
    assert first["user"]["username"] == "contract@example.com"
    call(app, "POST", "/signup", 409, body=credentials)
    call(app, "POST", "/signup", 400, body={**credentials, "password": "short"})
    call(app, "POST", "/signup", 400, body={**credentials, "extra": 1})
    call(app, "POST", "/signup", 415)
    call(app, "POST", "/signup", 413, body={**credentials, "password": "x" * 70_000})
    call(app, "POST", "/login", 401, body={**credentials, "password": OTHER_PASSWORD})
    second = call(app, "POST", "/login", 200, body=credentials).json()
    access = bearer(second["access_token"])

    assert call(app, "GET", "/me", 200, headers=access).json()["id"] == first["user"]["id"]
    call(app, "GET", "/me", 401)
    call(app, "GET", "/me", 401, headers=bearer("not-a-token"))
    sessions = call(app, "GET", "/sessions", 200, headers=access).json()["sessions"]
    assert len(sessions) == 2 and sum(session["current"] for session in sessions) == 1

    rotated = call(app, "POST", "/refresh", 200, headers=bearer(first["refresh_token"])).json()
    call(app, "POST", "/refresh", 200, body={"refresh_token": rotated["refresh_token"]})
    call(app, "POST", "/refresh", 401, headers=bearer(second["access_token"]))

    client = {"Authorization": basic(*INTROSPECTION_CLIENT)}
    token = {"token": second["access_token"]}
    live = call(app, "POST", "/introspect", 200, body=token, headers=client).json()
    assert live["active"] is True and live["sub"] == first["user"]["id"]
    token = {"token": second["refresh_token"]}
    assert call(app, "POST", "/introspect", 200, body=token, headers=client).json() == {
        "active": False
    }
    call(app, "POST", "/introspect", 401, body=token)
    call(app, "POST", "/introspect", 401, body=token, headers={"Authorization": basic("x", "y")})

    change = {"current_password": OTHER_PASSWORD, "new_password": "a third long passphrase"}
    call(app, "POST", "/password", 401, body=change, headers=access)
    change = {"current_password": PASSWORD, "new_password": "short"}
    call(app, "POST", "/password", 400, body=change, headers=access)
    change = {"current_password": PASSWORD, "new_password": OTHER_PASSWORD}
    call(app, "POST", "/password", 204, body=change, headers=access)

    # The password change revoked every other session; log in again to have one to revoke.
    third = call(app, "POST", "/login", 200, body={**credentials, "password": OTHER_PASSWORD})
    (other,) = [
        session["id"]
        for session in call(app, "GET", "/sessions", 200, headers=access).json()["sessions"]
        if not session["current"]
    ]
    delete = "/sessions/{session_id}"
    call(app, "DELETE", delete, 204, headers=access, path_parameters={"session_id": other})
    call(app, "DELETE", delete, 204, headers=access, path_parameters={"session_id": other})
    missing = {"session_id": "00000000-0000-4000-8000-000000000000"}
    call(app, "DELETE", delete, 404, headers=access, path_parameters=missing)
    call(app, "POST", "/refresh", 401, headers=bearer(third.json()["refresh_token"]))

    call(app, "POST", "/logout", 204, body={"scope": "others"}, headers=access)
    call(app, "POST", "/logout", 400, body={"scope": "everything"}, headers=access)
    call(app, "POST", "/logout", 204, headers=access)
    call(app, "GET", "/me", 401, headers=access)
    call(app, "POST", "/logout", 401, headers=access)


def test_admin_and_self_service_contract(contract_app: Flask) -> None:
    """The admin operations' and the self-service operations' success and main error paths,
    through the same checks."""
    app = contract_app
    with app.app_context():
        operator = bearer(admin_tokens.issue("contract", 600)[0])
    user = call(app, "POST", "/signup", 201, body={"username": "ann", "password": PASSWORD}).json()
    access = bearer(user["access_token"])
    call(app, "GET", "/me/export", 200, headers=access)
    call(app, "GET", "/admin/users", 401)
    call(app, "GET", "/admin/users", 403, headers=access)
    page = call(app, "GET", "/admin/users", 200, headers=operator).json()
    assert [entry["username"] for entry in page["users"]] == ["ann"]
    body = {"username": "ben", "password": PASSWORD, "roles": ["support"]}
    ben = call(app, "POST", "/admin/users", 201, body=body, headers=operator).json()
    call(app, "POST", "/admin/users", 409, body=body, headers=operator)
    call(app, "POST", "/admin/users", 400, body={"username": "x", "colour": 1}, headers=operator)
    ids = {"user_id": ben["id"]}
    one = "/admin/users/{user_id}"
    call(app, "GET", one, 200, headers=operator, path_parameters=ids)
    patch = {"roles": [], "disabled": True, "revoke_sessions": True}
    changed = call(app, "PATCH", one, 200, body=patch, headers=operator, path_parameters=ids)
    assert changed.json()["disabled"] is True
    missing = {"user_id": "00000000-0000-4000-8000-000000000000"}
    call(app, "GET", one, 404, headers=operator, path_parameters=missing)
    sessions = "/admin/users/{user_id}/sessions"
    listed = call(
        app, "GET", sessions, 200, headers=operator, path_parameters={"user_id": user["user"]["id"]}
    )
    assert len(listed.json()["sessions"]) == 1
    call(app, "DELETE", sessions, 204, headers=operator, path_parameters=ids)
    call(app, "GET", "/admin/events", 200, headers=operator)
    call(app, "DELETE", one, 204, headers=operator, path_parameters=ids)
    call(app, "DELETE", one, 404, headers=operator, path_parameters=ids)
    wrong = {"current_password": OTHER_PASSWORD}
    call(app, "DELETE", "/me", 401, body=wrong, headers=access)
    call(app, "DELETE", "/me", 204, body={"current_password": PASSWORD}, headers=access)
    call(app, "GET", "/me/export", 401, headers=access)


# -- the document says what the service does --------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_error_media_type_is_documented(contract_app: Flask) -> None:
    credentials = {"username": "media@example.com", "password": PASSWORD}
    call(contract_app, "POST", "/signup", 201, body=credentials)
    for method, path, status, body in [
        ("POST", "/signup", 409, credentials),
        ("POST", "/signup", 400, {"username": 1, "password": PASSWORD}),
        ("POST", "/login", 401, {**credentials, "password": OTHER_PASSWORD}),
        ("GET", "/me", 401, None),
    ]:
        call(contract_app, method, path, status, body=body, checks=CHECKS)


def test_login_with_nul_in_username(contract_app: Flask) -> None:
    """A NUL cannot even be compared on PostgreSQL: such a name is simply an unknown user."""
    body = {"username": "nul\x00user@example.com", "password": PASSWORD}
    call(contract_app, "POST", "/login", 401, body=body)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("path", "body", "limit"),
    [
        ("/signup", {"username": "throttled", "password": PASSWORD}, "SIGNUP_ADDRESS"),
        ("/login", {"username": "throttled", "password": PASSWORD}, "LOGIN_ADDRESS"),
        ("/refresh", {"refresh_token": "not-a-token"}, "REFRESH_ADDRESS"),
    ],
)
def test_throttled_response_is_documented(
    make_app: AppFactory, path: str, body: dict[str, str], limit: str
) -> None:
    app = make_app(**{"AUTHSVC_RATELIMIT_ENABLED": "true", f"AUTHSVC_RATELIMIT_{limit}": "1/hour"})
    case = schema[path]["POST"].Case(body=body, media_type="application/json")
    assert case.call(app=app).status_code != 429
    response = case.call(app=app)
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "rate_limited"
    assert int(response.headers["retry-after"][0]) > 0
    case.validate_response(response, checks=CHECKS)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(("method", "path"), [("GET", "/me"), ("POST", "/logout")])
def test_unavailable_response_is_documented(make_app: AppFactory, method: str, path: str) -> None:
    tokens = (
        make_app()
        .test_client()
        .post("/signup", json={"username": "unavailable", "password": PASSWORD})
    )
    # A database nothing listens on (loopback: refused at once). (With Redis down these two
    # fall back to the database, DESIGN §3, so the database is what makes them 503.)
    app = make_app(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/absent")
    case = schema[path][method].Case(headers=bearer(tokens.get_json()["access_token"]))
    started = time.monotonic()
    response = case.call(app=app)
    assert response.status_code == 503, response.text
    assert time.monotonic() - started < 10
    assert int(response.headers["retry-after"][0]) > 0
    # The 503 is provoked on purpose: check only that it is documented as sent.
    case.validate_response(response, checks=DOCUMENTATION_CHECKS)


def _operation(method: str, path: str) -> dict[str, Any]:
    return schema.raw_schema["paths"][path][method.lower()]


def test_optional_bodies_are_documented_optional() -> None:
    required = {
        path: _operation("POST", path)["requestBody"].get("required", False)
        for path in ("/refresh", "/logout")
    }
    assert required == {"/refresh": False, "/logout": False}


def test_no_undocumented_422() -> None:
    with_422 = [
        f"{method.upper()} {path}"
        for path, item in schema.raw_schema["paths"].items()
        for method, operation in item.items()
        if "422" in operation["responses"]
    ]
    assert with_422 == []


def _introspect_security_documented() -> bool:
    schemes = schema.raw_schema["components"].get("securitySchemes", {})
    has_basic = any(scheme.get("scheme") == "basic" for scheme in schemes.values())
    return has_basic and bool(_operation("POST", "/introspect").get("security"))


def _introspect_form_documented() -> bool:
    content = _operation("POST", "/introspect")["requestBody"]["content"]
    return "application/x-www-form-urlencoded" in content


def _refresh_security_documented() -> bool:
    return bool(_operation("POST", "/refresh").get("security"))


def _gap(check: Any, reason: str) -> Any:
    return pytest.param(check, id=check.__name__.strip("_"))


@pytest.mark.parametrize(
    "documented",
    [
        _gap(
            _introspect_security_documented,
            "/openapi.json does not say that POST /introspect takes HTTP Basic client "
            "credentials (no basic security scheme, no security requirement on the operation)",
        ),
        _gap(
            _introspect_form_documented,
            "POST /introspect accepts application/x-www-form-urlencoded (RFC 7662 §2.1, the "
            "README's curl example) but /openapi.json documents only application/json",
        ),
        _gap(
            _refresh_security_documented,
            "POST /refresh takes the refresh token as `Authorization: Bearer` but /openapi.json "
            "documents no security requirement for it (only the optional JSON field)",
        ),
    ],
)
def test_authentication_is_documented(documented: Any) -> None:
    assert documented()
