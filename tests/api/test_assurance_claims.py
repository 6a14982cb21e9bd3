"""amr, aal and auth_time on every access token (DESIGN §10): the session's values, kept by a
refresh; `fresh` on the login's own token only; and introspection reports them."""

from __future__ import annotations

import time

from tests.support.helpers import bearer, claims_of, login, signup


def test_a_password_login_is_aal1_with_pwd(client):
    before = int(time.time())
    tokens = signup(client)
    claims = claims_of(tokens["access_token"])
    assert claims["amr"] == ["pwd"]
    assert claims["aal"] == "aal1"
    assert before - 1 <= claims["auth_time"] <= int(time.time())
    assert claims["fresh"] is True


def test_a_refresh_keeps_the_sessions_values_and_is_not_fresh(client):
    signup(client)
    tokens = login(client)
    first = claims_of(tokens["access_token"])
    time.sleep(1.1)  # auth_time has a resolution of one second
    refreshed = client.post("/refresh", headers=bearer(tokens["refresh_token"])).get_json()
    claims = claims_of(refreshed["access_token"])
    assert (claims["amr"], claims["aal"], claims["auth_time"]) == (
        first["amr"],
        first["aal"],
        first["auth_time"],
    )
    assert claims["iat"] > first["auth_time"]
    assert claims["fresh"] is False


def test_a_new_login_has_its_own_auth_time(client):
    signup(client)
    first = claims_of(login(client)["access_token"])["auth_time"]
    time.sleep(1.1)
    assert claims_of(login(client)["access_token"])["auth_time"] > first


def test_introspection_reports_the_assurance(make_app):
    client = make_app(AUTHSVC_INTROSPECTION_CLIENTS="rs:resource-server-secret").test_client()
    access = signup(client)["access_token"]
    answer = client.post(
        "/introspect",
        data={"token": access},
        headers={"Authorization": "Basic cnM6cmVzb3VyY2Utc2VydmVyLXNlY3JldA=="},
    ).get_json()
    claims = claims_of(access)
    assert answer["active"] is True
    assert (answer["amr"], answer["aal"], answer["auth_time"]) == (
        ["pwd"],
        "aal1",
        claims["auth_time"],
    )
