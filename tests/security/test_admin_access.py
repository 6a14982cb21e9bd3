"""Who may call the admin API (DESIGN §11), attacked route by route: anonymous 401, a user 403
``forbidden``, an admin at aal1 403 ``mfa_required_for_admin``, an admin at aal2 and an
operator's token let in; all decided before the body is read. Tokens that look like admin
tokens but are not; and the last-admin rule under two parallel demotions. On SQLite and on
PostgreSQL + Redis."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.support.admin import aal1_login, make_admin, operator_token
from tests.support.helpers import (
    assert_invalid_token,
    assert_problem,
    bearer,
    claims_of,
    sign_with_service_key,
    signup,
)
from tests.support.mfa import Clock

ANY_ID = str(uuid.uuid4())


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


def admin_routes(app):
    """Every (method, path) the app serves under /admin/, with ids filled in."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin/"):
            continue
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<uuid:{name}>", ANY_ID)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((method, path))
    return sorted(routes)


def test_the_admin_api_has_the_routes_of_the_design(app):
    assert admin_routes(app) == sorted(
        [
            ("GET", "/admin/users"),
            ("POST", "/admin/users"),
            ("GET", f"/admin/users/{ANY_ID}"),
            ("PATCH", f"/admin/users/{ANY_ID}"),
            ("DELETE", f"/admin/users/{ANY_ID}"),
            ("GET", f"/admin/users/{ANY_ID}/sessions"),
            ("DELETE", f"/admin/users/{ANY_ID}/sessions"),
            ("DELETE", f"/admin/users/{ANY_ID}/sessions/{ANY_ID}"),
            ("DELETE", f"/admin/users/{ANY_ID}/factors/{ANY_ID}"),
            ("GET", "/admin/events"),
        ]
    )


def send(client, method, path, headers, *, bad_body=False):
    """The request with a body no view would accept (not JSON at all) when ``bad_body``."""
    if bad_body:
        return client.open(path, method=method, data="{not json", headers=headers)
    return client.open(path, method=method, headers=headers)


def test_every_refusal_of_the_matrix_holds_before_the_body_is_read(app, client, runner, clock):
    admin = make_admin(client, runner, clock)
    callers = {
        "anonymous": {},
        "user": bearer(signup(client, "mallory")["access_token"]),
        "admin at aal1": bearer(aal1_login(client, runner, "half", "admin")),
    }
    expected = {
        "anonymous": (401, "missing_token"),
        "user": (403, "forbidden"),
        "admin at aal1": (403, "mfa_required_for_admin"),
    }
    for method, path in admin_routes(app):
        for caller, headers in callers.items():
            for bad_body in (False, True):
                response = send(client, method, path, headers, bad_body=bad_body)
                status, code = expected[caller]
                assert_problem(response, status, code)
                if caller == "anonymous":
                    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'
    # Nothing the refused callers sent changed anything: the admin is still the only admin.
    users = client.get("/admin/users", headers=admin.headers).get_json()["users"]
    assert [user["roles"] for user in users if user["username"] == "root"] == [["admin"]]


@pytest.mark.parametrize("who", ["admin at aal2", "operator token"])
def test_an_aal2_admin_and_an_operator_token_get_past_the_check_on_every_route(
    app, client, runner, clock, who
):
    admin = make_admin(client, runner, clock)
    headers = admin.headers if who == "admin at aal2" else bearer(operator_token(app))
    for method, path in admin_routes(app):
        response = send(client, method, path, headers)
        # Unknown ids are 404, missing bodies 415: anything but a refusal of the caller.
        assert response.status_code not in (401, 403), (method, path, response.get_json())
        assert response.status_code < 500


def test_a_refresh_token_is_no_admin_credential(client, runner, clock):
    admin = make_admin(client, runner, clock)
    assert_invalid_token(client.get("/admin/users", headers=bearer(admin.refresh_token)))


def _forged_admin_token(app, **changes):
    now = int(time.time())
    claims = {
        "iss": "https://auth.test",
        "aud": "https://auth.test/admin",
        "sub": "operator:forger",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
        "type": "admin",
        "scope": "admin",
        **changes,
    }
    claims = {key: value for key, value in claims.items() if value is not None}
    return sign_with_service_key(app, claims, {"typ": "at+jwt"})


@pytest.mark.parametrize(
    "changes",
    [
        {"scope": "read"},
        {"scope": None},
        {"aud": "authsvc"},  # the users' audience
        {"aud": ["https://auth.test/admin", "authsvc"]},
        {"exp": int(time.time()) - 120},  # expired
        {"sid": str(uuid.uuid4())},
        {"type": "access"},  # an "access token" without session or roles
    ],
)
def test_tokens_that_are_almost_admin_tokens_are_401(app, client, changes):
    token = _forged_admin_token(app, **changes)
    assert_invalid_token(client.get("/admin/users", headers=bearer(token)))


def test_an_admin_token_signed_by_another_key_is_401(app, client):
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    genuine = claims_of(operator_token(app))
    foreign = jwt.encode(
        genuine,
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"typ": "at+jwt"},
    )
    assert_invalid_token(client.get("/admin/users", headers=bearer(foreign)))


def test_a_users_access_token_with_the_admin_audience_is_401(app, client):
    user = signup(client, "mallory")
    claims = claims_of(user["access_token"])
    claims["aud"] = "https://auth.test/admin"
    claims["roles"] = ["admin"]
    claims["aal"] = "aal2"
    forged = sign_with_service_key(app, claims, {"typ": "at+jwt"})
    assert_invalid_token(client.get("/admin/users", headers=bearer(forged)))
    assert_invalid_token(client.get("/me", headers=bearer(forged)))


def test_roles_in_the_token_give_no_admin_rights(app, client):
    """A token whose roles claim says admin (signed by us) while the stored roles do not."""
    user = signup(client, "mallory")
    claims = claims_of(user["access_token"])
    claims.update(roles=["admin"], aal="aal2", amr=["pwd", "otp"])
    forged = sign_with_service_key(app, claims, {"typ": "at+jwt"})
    assert_problem(client.get("/admin/users", headers=bearer(forged)), 403, "forbidden")


# -- the last admin, two at once -----------------------------------------------------------------


ROUNDS = 6


def test_two_admins_demoting_each_other_at_once_leave_one(app, client, runner, clock):
    first = make_admin(client, runner, clock, "first")
    second = make_admin(client, runner, clock, "second")
    operator = bearer(operator_token(app))
    for _round in range(ROUNDS):
        barrier = threading.Barrier(2, timeout=10)
        answers = {}

        def demote(actor, target, key, barrier=barrier, answers=answers):
            own = app.test_client()
            barrier.wait()
            answers[key] = own.patch(
                f"/admin/users/{target.user_id}", json={"roles": []}, headers=actor.headers
            )

        threads = [
            threading.Thread(target=demote, args=(first, second, "first")),
            threading.Thread(target=demote, args=(second, first, "second")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads)
        statuses = sorted(answer.status_code for answer in answers.values())
        # One wins; the other finds itself the last admin, or no admin any more.
        assert statuses[0] == 200 and statuses[1] in (403, 409), statuses
        users = client.get("/admin/users", headers=operator).get_json()["users"]
        admins = [user["username"] for user in users if "admin" in user["roles"]]
        assert len(admins) == 1, admins
        # Make both admins again for the next round.
        for admin in (first, second):
            restored = client.patch(
                f"/admin/users/{admin.user_id}", json={"roles": ["admin"]}, headers=operator
            )
            assert restored.status_code == 200


def test_two_admins_disabling_and_deleting_each_other_at_once_leave_one(app, client, runner, clock):
    first = make_admin(client, runner, clock, "first")
    second = make_admin(client, runner, clock, "second")
    barrier = threading.Barrier(2, timeout=10)
    answers = {}

    def act(key, call):
        own = app.test_client()
        barrier.wait()
        answers[key] = call(own)

    threads = [
        threading.Thread(
            target=act,
            args=(
                "disable",
                lambda own: own.patch(
                    f"/admin/users/{second.user_id}", json={"disabled": True}, headers=first.headers
                ),
            ),
        ),
        threading.Thread(
            target=act,
            args=(
                "delete",
                lambda own: own.delete(f"/admin/users/{first.user_id}", headers=second.headers),
            ),
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    statuses = sorted(answer.status_code for answer in answers.values())
    assert statuses[0] in (200, 204) and statuses[1] in (401, 409), statuses
    users = client.get("/admin/users", headers=bearer(operator_token(app))).get_json()["users"]
    active_admins = [u for u in users if "admin" in u["roles"] and not u["disabled"]]
    assert len(active_admins) == 1
