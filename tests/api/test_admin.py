"""The admin API (DESIGN §11): users, roles, sessions, factors and events, by an admin at aal2
or an operator's token; the last-admin rule; cursor pages. On SQLite and PostgreSQL + Redis."""

from __future__ import annotations

import pytest

from tests.support.admin import create_user, make_admin, operator_token
from tests.support.helpers import (
    PASSWORD,
    assert_invalid_token,
    assert_problem,
    bearer,
    claims_of,
    login,
    signup,
)
from tests.support.mfa import Clock, enrol_totp


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


@pytest.fixture
def root(client, runner, clock):
    return make_admin(client, runner, clock)


def user_id_of(client, root, username):
    found = client.get(f"/admin/users?q={username}", headers=root.headers).get_json()["users"]
    (user,) = [user for user in found if user["username"] == username]
    return user["id"]


def test_an_operator_finds_a_user_revokes_a_session_grants_a_role_and_disables_them(client, root):
    """The issue's "done when", through the API alone."""
    signup(client, "bob")
    phone = login(client, "bob")
    laptop = login(client, "bob")

    found = client.get("/admin/users?q=BO", headers=root.headers)
    assert found.status_code == 200 and found.headers["Cache-Control"] == "no-store"
    (bob,) = found.get_json()["users"]
    assert bob["username"] == "bob" and bob["disabled"] is False

    sessions = client.get(f"/admin/users/{bob['id']}/sessions", headers=root.headers).get_json()
    assert len(sessions["sessions"]) == 3
    assert all("current" not in session for session in sessions["sessions"])
    events = client.get(f"/admin/events?user_id={bob['id']}", headers=root.headers).get_json()
    assert [event["type"] for event in events["events"]] == ["login", "login", "signup"]

    phone_sid = claims_of(phone["access_token"])["sid"]
    revoked = client.delete(f"/admin/users/{bob['id']}/sessions/{phone_sid}", headers=root.headers)
    assert revoked.status_code == 204
    assert_invalid_token(client.get("/me", headers=bearer(phone["access_token"])), "token_revoked")
    assert client.get("/me", headers=bearer(laptop["access_token"])).status_code == 200

    granted = client.patch(
        f"/admin/users/{bob['id']}", json={"roles": ["admin"]}, headers=root.headers
    )
    assert granted.status_code == 200 and granted.get_json()["roles"] == ["admin"]
    # The old access token keeps its roles; the next refreshed one carries the new role.
    assert claims_of(laptop["access_token"])["roles"] == []
    refreshed = client.post("/refresh", headers=bearer(laptop["refresh_token"])).get_json()
    assert claims_of(refreshed["access_token"])["roles"] == ["admin"]

    disabled = client.patch(
        f"/admin/users/{bob['id']}", json={"disabled": True}, headers=root.headers
    )
    assert disabled.status_code == 200 and disabled.get_json()["disabled"] is True
    assert_invalid_token(
        client.post("/refresh", headers=bearer(refreshed["refresh_token"])), "token_revoked"
    )
    response = client.post("/login", json={"username": "bob", "password": PASSWORD})
    assert_problem(response, 401, "invalid_credentials")
    detail = client.get(f"/admin/users/{bob['id']}", headers=root.headers).get_json()
    assert detail["disabled"] is True and detail["last_login_at"] is not None
    types = [
        event["type"]
        for event in client.get(
            f"/admin/events?user_id={bob['id']}", headers=root.headers
        ).get_json()["events"]
    ]
    assert types[:4] == ["login_failed", "user_updated", "user_disabled", "user_updated"]
    assert "session_revoked" in types


# -- listing and pages ----------------------------------------------------------------------------


def test_users_are_listed_in_creation_order_page_by_page(client, root):
    for number in range(7):
        signup(client, f"user{number}")
    seen, cursor = [], None
    while True:
        query = "/admin/users?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query, headers=root.headers).get_json()
        seen += [user["username"] for user in page["users"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["root", *(f"user{number}" for number in range(7))]


def test_user_pages_hold_every_user_once_while_users_are_added(client, root):
    for number in range(6):
        signup(client, f"early{number}")
    before = {
        user["username"]
        for user in client.get("/admin/users?limit=200", headers=root.headers).get_json()["users"]
    }
    seen, cursor, added = [], None, 0
    while True:
        query = "/admin/users?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query, headers=root.headers).get_json()
        seen += [user["username"] for user in page["users"]]
        signup(client, f"late{added}")  # between every two pages
        added += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), seen  # nobody twice
    assert before <= set(seen)  # nobody who existed at the first page skipped


def test_event_pages_hold_every_event_once_while_events_are_written(client, root):
    signup(client, "bob")
    for _ in range(4):
        login(client, "bob")
    before = {
        event["id"]
        for event in client.get("/admin/events?limit=200", headers=root.headers).get_json()[
            "events"
        ]
    }
    seen, cursor = [], None
    while True:
        query = "/admin/events?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query, headers=root.headers).get_json()
        times = [event["at"] for event in page["events"]]
        assert times == sorted(times, reverse=True)  # newest first
        seen += [event["id"] for event in page["events"]]
        login(client, "bob")  # new events between pages
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert before <= set(seen)


def test_the_search_matches_the_start_of_a_username_or_an_address(mail_client, runner, clock):
    root = make_admin(mail_client, runner, clock)
    for name, address in (("carol", "Carol.Smith@Example.org"), ("dave", "dave@elsewhere.example")):
        body = {"username": name, "password": PASSWORD, "email": address}
        assert mail_client.post("/signup", json=body).status_code == 201

    def names(query):
        page = mail_client.get(f"/admin/users?q={query}", headers=root.headers).get_json()
        return sorted(user["username"] for user in page["users"])

    assert names("carol.s") == ["carol"]  # the address, compared case-folded
    assert names("DA") == ["dave"]
    assert names("%") == [] and names("_") == []  # LIKE wildcards are plain characters here
    assert names("zed") == []


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=201", "limit=ten", "colour=blue", "limit=2&limit=3", "q=" + "x" * 400],
)
def test_bad_list_queries_are_400(client, root, query):
    assert_problem(
        client.get(f"/admin/users?{query}", headers=root.headers), 400, "invalid_request"
    )


def _cursor(*position):
    import base64
    import json

    raw = json.dumps(list(position)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "WyJ4Il0",
        "e30",
        "A" * 300,
        _cursor("2020-01-01T00:00:00+00:00", 5),  # an id that is no string
        _cursor("9999-12-31T23:59:59-23:59", "0b6f6f4e-4b3c-4a4e-9d51-7b1c2c3d4e5f"),  # past UTC
    ],
)
def test_a_cursor_the_list_did_not_hand_out_is_400(client, root, cursor):
    for path in ("/admin/users", "/admin/events"):
        response = client.get(f"{path}?cursor={cursor}", headers=root.headers)
        expected = "invalid_request" if len(cursor) > 200 else "invalid_cursor"
        assert_problem(response, 400, expected)


def test_unknown_and_malformed_ids_are_404(client, root):
    for path in (
        "/admin/users/0b6f6f4e-4b3c-4a4e-9d51-7b1c2c3d4e5f",
        "/admin/users/not-a-uuid",
        "/admin/users/0b6f6f4e-4b3c-4a4e-9d51-7b1c2c3d4e5f/sessions",
    ):
        assert_problem(client.get(path, headers=root.headers), 404, "not_found")
    other = "0b6f6f4e-4b3c-4a4e-9d51-7b1c2c3d4e5f"
    response = client.delete(f"/admin/users/{root.user_id}/sessions/{other}", headers=root.headers)
    assert_problem(response, 404, "not_found")
    response = client.delete(f"/admin/users/{root.user_id}/factors/{other}", headers=root.headers)
    assert_problem(response, 404, "not_found")


# -- creating and changing ------------------------------------------------------------------------


def test_an_admin_creates_an_account_with_roles_it_holds(client, root):
    response = client.post(
        "/admin/users",
        json={
            "username": "Erin",
            "password": PASSWORD,
            "email": "erin@example.com",
            "roles": ["admin"],
        },
        headers=root.headers,
    )
    assert response.status_code == 201
    body = response.get_json()
    assert (body["username"], body["roles"], body["email_verified"]) == ("erin", ["admin"], True)
    assert login(client, "erin")["user"]["id"] == body["id"]
    taken = client.post("/admin/users", json={"username": "erin"}, headers=root.headers)
    assert_problem(taken, 409, "username_taken")


def test_no_one_grants_a_role_they_lack(client, root):
    response = client.post(
        "/admin/users", json={"username": "frank", "roles": ["billing"]}, headers=root.headers
    )
    assert_problem(response, 403, "role_not_held")
    bob = signup(client, "bob")["user"]["id"]
    response = client.patch(
        f"/admin/users/{bob}", json={"roles": ["admin", "billing"]}, headers=root.headers
    )
    assert_problem(response, 403, "role_not_held")
    assert client.get(f"/admin/users/{bob}", headers=root.headers).get_json()["roles"] == []


def test_removing_a_role_the_admin_lacks_is_allowed(client, runner, root):
    create_user(runner, "grace", "billing", "support")
    grace = user_id_of(client, root, "grace")
    response = client.patch(
        f"/admin/users/{grace}", json={"roles": ["support"]}, headers=root.headers
    )
    assert response.status_code == 200 and response.get_json()["roles"] == ["support"]


def test_an_operator_token_may_grant_any_role(app, client, root):
    bob = signup(client, "bob")["user"]["id"]
    token = bearer(operator_token(app))
    response = client.patch(f"/admin/users/{bob}", json={"roles": ["billing"]}, headers=token)
    assert response.status_code == 200 and response.get_json()["roles"] == ["billing"]


@pytest.mark.parametrize(
    "roles", [["has space"], ["x" * 65], [""], ["admin\n"], [f"r{n}" for n in range(33)]]
)
def test_bad_role_names_are_400(client, root, roles):
    bob = signup(client, "bob")["user"]["id"]
    response = client.patch(f"/admin/users/{bob}", json={"roles": roles}, headers=root.headers)
    assert_problem(response, 400, "invalid_request")


def test_an_account_made_without_a_password_cannot_log_in_with_any(client, root):
    response = client.post("/admin/users", json={"username": "henry"}, headers=root.headers)
    assert response.status_code == 201
    for password in (PASSWORD, "", "None"):
        answer = client.post("/login", json={"username": "henry", "password": password})
        assert answer.status_code in (400, 401)


def test_revoke_sessions_ends_a_removed_role_at_once(client, runner, root):
    create_user(runner, "ivan", "support")
    tokens = login(client, "ivan")
    ivan = tokens["user"]["id"]
    response = client.patch(
        f"/admin/users/{ivan}", json={"roles": [], "revoke_sessions": True}, headers=root.headers
    )
    assert response.status_code == 200 and response.get_json()["roles"] == []
    assert_invalid_token(client.get("/me", headers=bearer(tokens["access_token"])), "token_revoked")
    assert login(client, "ivan")["user"]["roles"] == []


def test_a_disabled_account_can_be_enabled_again(client, root):
    bob = signup(client, "bob")["user"]["id"]
    client.patch(f"/admin/users/{bob}", json={"disabled": True}, headers=root.headers)
    enabled = client.patch(f"/admin/users/{bob}", json={"disabled": False}, headers=root.headers)
    assert enabled.get_json()["disabled"] is False
    assert login(client, "bob")["user"]["id"] == bob


def test_a_deleted_account_is_gone_but_its_events_keep_its_id(client, root):
    tokens = signup(client, "bob")
    bob = tokens["user"]["id"]
    assert client.delete(f"/admin/users/{bob}", headers=root.headers).status_code == 204
    assert_problem(client.get(f"/admin/users/{bob}", headers=root.headers), 404, "not_found")
    assert_invalid_token(client.get("/me", headers=bearer(tokens["access_token"])), "token_revoked")
    events = client.get(f"/admin/events?user_id={bob}", headers=root.headers).get_json()["events"]
    assert events[0]["type"] == "user_deleted" and events[0]["actor_id"] == root.user_id
    assert {event["type"] for event in events} >= {"signup", "user_deleted"}
    assert signup(client, "bob")["user"]["id"] != bob  # the name is free again


def test_an_admin_removes_a_lost_factor(client, clock, root):
    tokens = signup(client, "bob")
    bob = tokens["user"]["id"]
    enrolled = enrol_totp(client, tokens["access_token"], clock)
    detail = client.get(f"/admin/users/{bob}", headers=root.headers).get_json()
    assert [(factor["id"], factor["type"]) for factor in detail["factors"]] == [
        (enrolled.factor_id, "totp")
    ]
    assert "secret" not in str(detail)
    removed = client.delete(
        f"/admin/users/{bob}/factors/{enrolled.factor_id}", headers=root.headers
    )
    assert removed.status_code == 204
    assert client.get(f"/admin/users/{bob}", headers=root.headers).get_json()["factors"] == []
    assert login(client, "bob")["user"]["id"] == bob  # a password alone again
    # Another user's factor is not this user's: 404.
    response = client.delete(
        f"/admin/users/{root.user_id}/factors/{enrolled.factor_id}", headers=root.headers
    )
    assert_problem(response, 404, "not_found")


def test_revoking_every_session_of_a_user(client, root):
    first, second = signup(client, "bob"), login(client, "bob")
    bob = first["user"]["id"]
    assert client.delete(f"/admin/users/{bob}/sessions", headers=root.headers).status_code == 204
    for tokens in (first, second):
        assert_invalid_token(
            client.get("/me", headers=bearer(tokens["access_token"])), "token_revoked"
        )
    assert client.get(f"/admin/users/{bob}/sessions", headers=root.headers).get_json() == {
        "sessions": []
    }


# -- the last admin -------------------------------------------------------------------------------


def test_the_last_admin_cannot_be_demoted_disabled_or_deleted(app, client, root):
    me = f"/admin/users/{root.user_id}"
    assert_problem(client.patch(me, json={"roles": []}, headers=root.headers), 409, "last_admin")
    assert_problem(
        client.patch(me, json={"disabled": True}, headers=root.headers), 409, "last_admin"
    )
    assert_problem(client.delete(me, headers=root.headers), 409, "last_admin")
    token = bearer(operator_token(app))  # not even by the operator
    assert_problem(client.patch(me, json={"roles": ["x"]}, headers=token), 409, "last_admin")
    assert client.get(me, headers=root.headers).get_json()["roles"] == ["admin"]


def test_with_a_second_admin_the_first_may_step_down(client, runner, clock, root):
    second = make_admin(client, runner, clock, "second")
    response = client.patch(
        f"/admin/users/{root.user_id}", json={"roles": []}, headers=root.headers
    )
    assert response.status_code == 200
    # Rights are the stored roles, read on every admin request: the same aal2 token is refused now.
    assert_problem(client.get("/admin/users", headers=root.headers), 403, "forbidden")
    me = f"/admin/users/{second.user_id}"
    assert_problem(
        client.patch(me, json={"disabled": True}, headers=second.headers), 409, "last_admin"
    )


def test_a_disabled_admins_token_is_refused_at_once(client, runner, clock, root):
    second = make_admin(client, runner, clock, "second")
    client.patch(f"/admin/users/{second.user_id}", json={"disabled": True}, headers=root.headers)
    assert_invalid_token(client.get("/admin/users", headers=second.headers), "token_revoked")


# -- operator tokens ------------------------------------------------------------------------------


def test_the_cli_prints_an_operator_token_for_the_admin_api(app, client, runner):
    result = runner.invoke(args=["admin", "token", "--name", "ops", "--ttl", "120"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    claims = claims_of(token)
    assert claims["sub"] == "operator:ops" and claims["scope"] == "admin"
    assert claims["exp"] - claims["iat"] == 120 and "sid" not in claims
    assert claims["aud"] == "https://auth.test/admin"  # no downstream service takes it
    assert client.get("/admin/users", headers=bearer(token)).status_code == 200
    events = client.get("/admin/events?type=admin_token_issued", headers=bearer(token)).get_json()
    assert events["events"][0]["detail"]["jti"] == claims["jti"]
    assert events["events"][0]["actor_id"] == "operator:ops"


@pytest.mark.parametrize("args", [["--ttl", "3601"], ["--ttl", "10"], ["--name", "two words"]])
def test_the_cli_refuses_long_lived_or_oddly_named_tokens(runner, args):
    result = runner.invoke(args=["admin", "token", *args])
    assert result.exit_code != 0 and "eyJ" not in result.output


def test_an_operator_token_opens_the_admin_api_only(app, client):
    token = operator_token(app)
    for path in ("/me", "/sessions", "/me/export"):
        assert_invalid_token(client.get(path, headers=bearer(token)))
    assert_invalid_token(client.post("/refresh", headers=bearer(token)))
    assert_invalid_token(client.post("/logout", headers=bearer(token)))


def test_admin_actions_by_an_operator_token_are_audited_as_the_operator(app, client):
    token = bearer(operator_token(app, "nightly"))
    bob = signup(client, "bob")["user"]["id"]
    client.patch(f"/admin/users/{bob}", json={"disabled": True}, headers=token)
    events = client.get(f"/admin/events?user_id={bob}&type=user_updated", headers=token).get_json()
    assert events["events"][0]["actor_id"] == "operator:nightly"


def test_a_user_sessions_listing_shows_what_get_sessions_shows(client, root):
    tokens = signup(client, "bob", headers={"User-Agent": "phone-app/1.0"})
    own = client.get("/sessions", headers=bearer(tokens["access_token"])).get_json()["sessions"]
    listed = client.get(f"/admin/users/{tokens['user']['id']}/sessions", headers=root.headers)
    (session,) = listed.get_json()["sessions"]
    assert session == {key: value for key, value in own[0].items() if key != "current"}
    assert session["user_agent"] == "phone-app/1.0"


@pytest.mark.parametrize(
    "since", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "soon"]
)
def test_a_since_no_utc_time_can_hold_is_400(client, root, since):
    response = client.get(f"/admin/events?since={since}", headers=root.headers)
    assert_problem(response, 400, "invalid_request")


def test_an_erased_admin_leaves_no_address_on_what_they_did(client, runner, clock, root):
    second = make_admin(client, runner, clock, "second")
    bob = signup(client, "bob")["user"]["id"]
    client.patch(f"/admin/users/{bob}", json={"disabled": True}, headers=second.headers)
    assert client.delete(f"/admin/users/{second.user_id}", headers=root.headers).status_code == 204
    events = client.get(f"/admin/events?user_id={bob}", headers=root.headers).get_json()["events"]
    done_by_second = [event for event in events if event["actor_id"] == second.user_id]
    assert done_by_second and all(event["ip"] is None for event in done_by_second)
