"""Second factors over the API (DESIGN §10): TOTP enrolment, the second step of a login,
recovery codes, removing a factor, and roles that require one. On SQLite and on
PostgreSQL + Redis."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import segno
from sqlalchemy import select, update

from authsvc.extensions import db
from authsvc.models import Challenge, Factor, Session, utcnow
from tests.support.helpers import (
    OTHER_PASSWORD,
    PASSWORD,
    assert_problem,
    bearer,
    claims_of,
    login,
    signup,
)
from tests.support.mfa import Clock, enrol_totp, mfa_token


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


def second_step(client, token, code):
    return client.post("/login/mfa", json={"mfa_token": token, "code": code})


def assert_bad_mfa_token(response):
    """A spent, expired or exhausted mfa_token: 401 invalid_token, no bearer challenge."""
    assert_problem(response, 401, "invalid_token")
    assert "WWW-Authenticate" not in response.headers


# -- enrolment ------------------------------------------------------------------------------------


def test_enrolment_returns_the_secret_its_uri_and_a_qr_code_of_it(client):
    access = signup(client)["access_token"]
    response = client.post("/mfa/totp", json={"current_password": PASSWORD}, headers=bearer(access))
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert re.fullmatch(r"[A-Z2-7]{32}", body["secret"])  # base32, 160 bits
    uri = urlsplit(body["otpauth_uri"])
    assert (uri.scheme, uri.netloc, uri.path) == ("otpauth", "totp", "/authsvc:alice")
    query = parse_qs(uri.query)
    assert query["secret"] == [body["secret"]] and query["issuer"] == ["authsvc"]
    # The QR code is inline SVG markup of exactly that URI.
    assert body["qr_svg"].startswith("<svg") and "<?xml" not in body["qr_svg"]
    expected = segno.make(body["otpauth_uri"], error="m")
    assert body["qr_svg"] == expected.svg_inline(scale=4, title="TOTP enrolment QR code")


def test_enrolment_needs_the_current_password(client):
    access = signup(client)["access_token"]
    headers = bearer(access)
    assert_problem(client.post("/mfa/totp", json={}, headers=headers), 400, "invalid_request")
    wrong = client.post("/mfa/totp", json={"current_password": OTHER_PASSWORD}, headers=headers)
    assert_problem(wrong, 401, "invalid_credentials")
    assert_problem(
        client.post("/mfa/totp", json={"current_password": PASSWORD}), 401, "missing_token"
    )


def test_a_factor_counts_only_once_confirmed(client, clock):
    access = signup(client)["access_token"]
    headers = bearer(access)
    started = client.post("/mfa/totp", json={"current_password": PASSWORD}, headers=headers)
    assert client.get("/mfa", headers=headers).get_json() == {
        "factors": [],
        "recovery_codes_left": 0,
    }
    login(client)  # still a plain login: the enrolment is pending
    confirm = f"/mfa/totp/{started.get_json()['id']}/confirm"
    assert_problem(
        client.post(confirm, json={"code": "000000"}, headers=headers), 401, "invalid_code"
    )
    login(client)


def test_confirmation_gives_ten_distinct_recovery_codes_and_lists_the_factor(client, clock):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    assert len(set(enrolled.recovery_codes)) == 10
    assert all(re.fullmatch(r"[0-9a-z]{5}-[0-9a-z]{5}", code) for code in enrolled.recovery_codes)
    listed = client.get("/mfa", headers=bearer(access)).get_json()
    assert listed["recovery_codes_left"] == 10
    (factor,) = listed["factors"]
    assert factor["id"] == enrolled.factor_id and factor["type"] == "totp"
    assert enrolled.secret not in str(listed)  # never a secret


def test_an_enrolment_is_confirmed_once_and_only_for_ten_minutes(app, client, clock):
    access = signup(client)["access_token"]
    headers = bearer(access)
    started = client.post("/mfa/totp", json={"current_password": PASSWORD}, headers=headers)
    body = started.get_json()
    with app.app_context():
        db.session.execute(
            update(Factor).values(created_at=utcnow() - timedelta(minutes=10, seconds=1))
        )
        db.session.commit()
    confirm = f"/mfa/totp/{body['id']}/confirm"
    late = client.post(confirm, json={"code": clock.code(body["secret"])}, headers=headers)
    assert_problem(late, 404, "not_found")

    enrolled = enrol_totp(client, access, clock)
    again = client.post(
        f"/mfa/totp/{enrolled.factor_id}/confirm",
        json={"code": clock.code(enrolled.secret, 1)},
        headers=headers,
    )
    assert_problem(again, 404, "not_found")


def test_a_second_authenticator_app_is_refused(client, clock):
    access = signup(client)["access_token"]
    enrol_totp(client, access, clock)
    response = client.post("/mfa/totp", json={"current_password": PASSWORD}, headers=bearer(access))
    assert_problem(response, 409, "factor_exists")


def test_someone_elses_enrolment_cannot_be_confirmed(client, clock):
    alice = signup(client)["access_token"]
    bob = signup(client, "bob")["access_token"]
    started = client.post("/mfa/totp", json={"current_password": PASSWORD}, headers=bearer(alice))
    body = started.get_json()
    stolen = client.post(
        f"/mfa/totp/{body['id']}/confirm",
        json={"code": clock.code(body["secret"])},
        headers=bearer(bob),
    )
    assert_problem(stolen, 404, "not_found")


def test_confirming_a_first_factor_revokes_the_other_password_only_sessions(client, clock):
    access = signup(client)["access_token"]
    other = login(client)["access_token"]
    enrol_totp(client, access, clock)
    assert client.get("/me", headers=bearer(access)).status_code == 200  # the one that enrolled
    assert client.get("/me", headers=bearer(other)).status_code == 401


# -- the second step of a login -------------------------------------------------------------------


def test_login_with_a_factor_needs_the_second_step(client, clock):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    response = client.post("/login", json={"username": "alice", "password": PASSWORD})
    body = assert_problem(response, 403, "mfa_required")
    assert "access_token" not in body and "refresh_token" not in body
    assert body["factors"] == [{"id": enrolled.factor_id, "type": "totp"}]
    clock.advance()
    done = second_step(client, body["mfa_token"], clock.code(enrolled.secret))
    assert done.status_code == 200
    tokens = done.get_json()
    claims = claims_of(tokens["access_token"])
    assert claims["aal"] == "aal2" and claims["amr"] == ["pwd", "otp"] and claims["fresh"] is True
    assert tokens["user"]["username"] == "alice"
    # A refresh keeps how the session was proven (and is not a fresh login).
    refreshed = client.post("/refresh", headers=bearer(tokens["refresh_token"])).get_json()
    again = claims_of(refreshed["access_token"])
    assert (again["aal"], again["amr"], again["fresh"]) == ("aal2", ["pwd", "otp"], False)
    assert again["auth_time"] == claims["auth_time"]


def test_a_wrong_password_gives_no_hint_that_mfa_exists(client, clock):
    access = signup(client)["access_token"]
    signup(client, "bob")
    enrol_totp(client, access, clock)
    with_mfa = client.post("/login", json={"username": "alice", "password": OTHER_PASSWORD})
    without = client.post("/login", json={"username": "bob", "password": OTHER_PASSWORD})
    assert_problem(with_mfa, 401, "invalid_credentials")
    assert with_mfa.get_json() == without.get_json()
    assert set(with_mfa.headers.keys()) == set(without.headers.keys())
    assert with_mfa.headers["Content-Length"] == without.headers["Content-Length"]


def test_a_used_code_is_refused_even_within_its_step(client, clock):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    # The confirmation used this step's code: it does not log in.
    refused = second_step(client, mfa_token(client), clock.code(enrolled.secret))
    assert_problem(refused, 401, "invalid_code")
    clock.advance()
    code = clock.code(enrolled.secret)
    assert second_step(client, mfa_token(client), code).status_code == 200
    assert_problem(second_step(client, mfa_token(client), code), 401, "invalid_code")
    # Nor an older step's code once a later one was used, though it is within the drift.
    assert_problem(
        second_step(client, mfa_token(client), clock.code(enrolled.secret, -1)), 401, "invalid_code"
    )


@pytest.mark.parametrize(("offset", "accepted"), [(-1, True), (1, True), (-2, False), (2, False)])
def test_one_step_of_drift_is_allowed_two_are_not(client, clock, offset, accepted):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    clock.advance(3)  # well past the confirming step, so -2 is not refused as a replay
    response = second_step(client, mfa_token(client), clock.code(enrolled.secret, offset))
    if accepted:
        assert response.status_code == 200, response.get_json()
    else:
        assert_problem(response, 401, "invalid_code")


def test_an_mfa_token_works_once(client, clock):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    token = mfa_token(client)
    clock.advance()
    assert second_step(client, token, clock.code(enrolled.secret)).status_code == 200
    clock.advance()
    assert_bad_mfa_token(second_step(client, token, clock.code(enrolled.secret)))


def test_an_mfa_token_expires_after_five_minutes(app, client, clock):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    token = mfa_token(client)
    with app.app_context():
        row = db.session.scalar(select(Challenge))
        assert row.expires_at - row.created_at == timedelta(minutes=5)
        db.session.execute(update(Challenge).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    clock.advance()
    assert_bad_mfa_token(second_step(client, token, clock.code(enrolled.secret)))


def test_an_mfa_token_allows_five_attempts(client, clock):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    token = mfa_token(client)
    for _ in range(5):
        assert_problem(second_step(client, token, "000000"), 401, "invalid_code")
    clock.advance()
    # Exhausted: even the right code is refused now.
    assert_bad_mfa_token(second_step(client, token, clock.code(enrolled.secret)))


@pytest.mark.parametrize("token", ["", "x" * 43, "not a token", "a" * 500])
def test_an_unknown_mfa_token_is_refused(client, token):
    assert_bad_mfa_token(second_step(client, token, "123456"))


def test_an_mfa_token_dies_with_the_password_it_checked(client, clock):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    token = mfa_token(client)
    changed = client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": OTHER_PASSWORD},
        headers=bearer(access),
    )
    assert changed.status_code == 204
    clock.advance()
    assert_bad_mfa_token(second_step(client, token, clock.code(enrolled.secret)))


def test_an_mfa_token_cannot_enrol_and_an_enrol_token_cannot_log_in(client, clock):
    access = signup(client)["access_token"]
    enrol_totp(client, access, clock)
    token = mfa_token(client)
    assert_bad_mfa_token(client.post("/mfa/totp", json={"mfa_token": token}))


# -- recovery codes -------------------------------------------------------------------------------


def test_a_recovery_code_logs_in_once(client, clock):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    code = enrolled.recovery_codes[3]
    # As typed from paper: any case, without the dash.
    response = second_step(client, mfa_token(client), code.upper().replace("-", ""))
    assert response.status_code == 200
    claims = claims_of(response.get_json()["access_token"])
    assert claims["amr"] == ["pwd", "mfa"] and claims["aal"] == "aal2"
    assert_problem(second_step(client, mfa_token(client), code), 401, "invalid_code")
    assert client.get("/mfa", headers=bearer(access)).get_json()["recovery_codes_left"] == 9


def test_another_users_recovery_code_does_not_work(client, clock):
    alice = enrol_totp(client, signup(client)["access_token"], clock)
    enrol_totp(client, signup(client, "bob")["access_token"], clock)
    stolen = second_step(client, mfa_token(client, "bob"), alice.recovery_codes[0])
    assert_problem(stolen, 401, "invalid_code")


def test_using_a_recovery_code_is_mailed_to_the_user(make_app, mail_server, clock):
    client = make_app(AUTHSVC_SMTP_URL=mail_server.url).test_client()
    body = {"username": "alice", "password": PASSWORD, "email": "alice@example.com"}
    access = client.post("/signup", json=body).get_json()["access_token"]
    enrolled = enrol_totp(client, access, clock)
    assert second_step(client, mfa_token(client), enrolled.recovery_codes[0]).status_code == 200
    subjects = {message["Subject"] for message in mail_server.wait_for(3, to="alice@example.com")}
    assert "A recovery code of your account was used" in subjects
    assert "The sign-in settings of your account changed" in subjects  # the factor added
    (notice,) = [m for m in mail_server.messages() if "recovery code" in m["Subject"]]
    assert "9 unused" in notice.get_body(("plain",)).get_content()


def test_new_recovery_codes_replace_the_old_set(client, clock):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    headers = bearer(access)
    body = {"current_password": PASSWORD, "code": enrolled.recovery_codes[0]}
    response = client.post("/mfa/recovery-codes", json=body, headers=headers)
    assert response.status_code == 200
    fresh = response.get_json()["recovery_codes"]
    assert len(fresh) == 10 and not set(fresh) & set(enrolled.recovery_codes)
    assert_problem(
        second_step(client, mfa_token(client), enrolled.recovery_codes[1]), 401, "invalid_code"
    )
    assert second_step(client, mfa_token(client), fresh[0]).status_code == 200


def test_new_recovery_codes_need_the_password_and_a_code(client, clock):
    access = signup(client)["access_token"]
    headers = bearer(access)
    none_yet = client.post(
        "/mfa/recovery-codes",
        json={"current_password": PASSWORD, "code": "123456"},
        headers=headers,
    )
    assert_problem(none_yet, 409, "mfa_not_enabled")
    enrolled = enrol_totp(client, access, clock)
    wrong_password = {"current_password": OTHER_PASSWORD, "code": enrolled.recovery_codes[0]}
    assert_problem(
        client.post("/mfa/recovery-codes", json=wrong_password, headers=headers),
        401,
        "invalid_credentials",
    )
    wrong_code = {"current_password": PASSWORD, "code": "000000"}
    assert_problem(
        client.post("/mfa/recovery-codes", json=wrong_code, headers=headers), 401, "invalid_code"
    )


# -- removing a factor ----------------------------------------------------------------------------


def test_removing_the_factor_needs_the_password_and_a_code(client, clock):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    headers = bearer(access)
    path = f"/mfa/{enrolled.factor_id}"
    clock.advance()
    code = clock.code(enrolled.secret)
    wrong_password = client.delete(
        path, json={"current_password": OTHER_PASSWORD, "code": code}, headers=headers
    )
    assert_problem(wrong_password, 401, "invalid_credentials")
    wrong_code = client.delete(
        path, json={"current_password": PASSWORD, "code": "000000"}, headers=headers
    )
    assert_problem(wrong_code, 401, "invalid_code")
    done = client.delete(path, json={"current_password": PASSWORD, "code": code}, headers=headers)
    assert done.status_code == 204
    assert client.get("/mfa", headers=headers).get_json() == {
        "factors": [],
        "recovery_codes_left": 0,  # the codes went with the last factor
    }
    login(client)  # a plain login again


def test_removing_an_unknown_factor_is_404(client, clock):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    body = {"current_password": PASSWORD, "code": enrolled.recovery_codes[0]}
    response = client.delete(
        "/mfa/00000000-0000-4000-8000-000000000000", json=body, headers=bearer(access)
    )
    assert_problem(response, 404, "not_found")


# -- roles that require a factor ------------------------------------------------------------------


@pytest.fixture
def admin_client(make_app):
    app = make_app(AUTHSVC_MFA_REQUIRED_ROLES="admin")
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["users", "create", "root", "--role", "admin", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    return app.test_client()


def test_a_role_that_needs_a_factor_can_only_enrol(admin_client, clock):
    response = admin_client.post("/login", json={"username": "root", "password": PASSWORD})
    body = assert_problem(response, 403, "mfa_enrolment_required")
    assert body["factors"] == [] and "access_token" not in body
    token = body["mfa_token"]
    assert_bad_mfa_token(second_step(admin_client, token, "123456"))  # it cannot log in
    started = admin_client.post("/mfa/totp", json={"mfa_token": token})
    assert started.status_code == 201
    enrolment = started.get_json()
    confirmed = admin_client.post(
        f"/mfa/totp/{enrolment['id']}/confirm",
        json={"code": clock.code(enrolment["secret"]), "mfa_token": token},
    )
    assert confirmed.status_code == 200
    body = confirmed.get_json()
    assert len(body["recovery_codes"]) == 10
    claims = claims_of(body["access_token"])
    assert (claims["aal"], claims["amr"], claims["roles"]) == ("aal2", ["pwd", "otp"], ["admin"])
    # Spent: the enrol-only token does not make a second session.
    assert_bad_mfa_token(admin_client.post("/mfa/totp", json={"mfa_token": token}))
    # From now on the ordinary second step.
    assert_problem(
        admin_client.post("/login", json={"username": "root", "password": PASSWORD}),
        403,
        "mfa_required",
    )


def test_a_role_that_needs_a_factor_keeps_its_last_one(admin_client, clock):
    token = admin_client.post("/login", json={"username": "root", "password": PASSWORD})
    token = token.get_json()["mfa_token"]
    enrolment = admin_client.post("/mfa/totp", json={"mfa_token": token}).get_json()
    body = admin_client.post(
        f"/mfa/totp/{enrolment['id']}/confirm",
        json={"code": clock.code(enrolment["secret"]), "mfa_token": token},
    ).get_json()
    response = admin_client.delete(
        f"/mfa/{enrolment['id']}",
        json={"current_password": PASSWORD, "code": body["recovery_codes"][0]},
        headers=bearer(body["access_token"]),
    )
    assert_problem(response, 409, "factor_required")
    # Refused as a whole: the recovery code was not spent either.
    again = second_step(admin_client, mfa_token(admin_client, "root"), body["recovery_codes"][0])
    assert again.status_code == 200


def test_both_fields_or_neither_at_enrolment_is_a_bad_request(client):
    access = signup(client)["access_token"]
    both = client.post(
        "/mfa/totp",
        json={"current_password": PASSWORD, "mfa_token": "x" * 43},
        headers=bearer(access),
    )
    assert_problem(both, 400, "invalid_request")


def test_sessions_record_how_they_were_proven(app, client, clock):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    clock.advance()
    second_step(client, mfa_token(client), clock.code(enrolled.secret))
    with app.app_context():
        proofs = {(tuple(s.amr), s.aal) for s in db.session.scalars(select(Session))}
    # The session that added the app proved the password and the app's code: it is aal2 too.
    assert proofs == {(("pwd", "otp"), "aal2")}


# -- an operator's reset --------------------------------------------------------------------------


def test_an_operator_can_reset_a_lost_second_factor(client, runner, clock):
    access = signup(client)["access_token"]
    enrol_totp(client, access, clock)
    result = runner.invoke(args=["users", "reset-mfa", "alice"])
    assert result.exit_code == 0, result.output
    assert "removed 1 factors of alice" in result.output
    assert client.get("/me", headers=bearer(access)).status_code == 401  # sessions revoked
    login(client)  # the password alone again
    unknown = runner.invoke(args=["users", "reset-mfa", "nobody"])
    assert unknown.exit_code != 0


# -- step-up rules ---------------------------------------------------------------------------------


def test_the_session_that_adds_a_first_factor_is_raised_to_aal2(client, clock):
    tokens = signup(client)
    enrol_totp(client, tokens["access_token"], clock)
    refreshed = client.post("/refresh", headers=bearer(tokens["refresh_token"])).get_json()
    claims = claims_of(refreshed["access_token"])
    assert (claims["aal"], claims["amr"]) == ("aal2", ["pwd", "otp"])


def test_a_password_only_session_cannot_add_a_factor_next_to_one(app, client, clock):
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    headers = bearer(access)
    # A session proven by the password alone (say, from before the account had a factor).
    with app.app_context():
        db.session.execute(update(Session).values(aal="aal1", amr=["pwd"]))
        db.session.commit()
    refused = client.post("/mfa/totp", json={"current_password": PASSWORD}, headers=headers)
    assert_problem(refused, 403, "insufficient_user_authentication")
    passkey = client.post(
        "/webauthn/register/options", json={"current_password": PASSWORD}, headers=headers
    )
    assert_problem(passkey, 403, "insufficient_user_authentication")
    # Removing still takes the password and a code, whatever the session.
    body = {"current_password": PASSWORD, "code": enrolled.recovery_codes[0]}
    assert (
        client.delete(f"/mfa/{enrolled.factor_id}", json=body, headers=headers).status_code == 204
    )


def test_a_password_only_session_ends_when_its_role_comes_to_need_a_factor(make_app):
    before = make_app()
    runner = before.test_cli_runner()
    result = runner.invoke(
        args=["users", "create", "root", "--role", "admin", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    tokens = login(before.test_client(), "root")
    # The operator turns the rule on: the admin's password-only session refreshes no more.
    after = make_app(AUTHSVC_MFA_REQUIRED_ROLES="admin").test_client()
    refused = after.post("/refresh", headers=bearer(tokens["refresh_token"]))
    assert_problem(refused, 401, "token_revoked")
    assert after.get("/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert_problem(
        after.post("/login", json={"username": "root", "password": PASSWORD}),
        403,
        "mfa_enrolment_required",
    )


def test_an_mfa_token_is_never_cached(client, clock):
    enrol_totp(client, signup(client)["access_token"], clock)
    response = client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"


def test_wrong_codes_are_counted_with_throttling_turned_off(make_app, clock):
    client = make_app(AUTHSVC_RATELIMIT_ENABLED="false").test_client()
    enrolled = enrol_totp(client, signup(client)["access_token"], clock)
    for _ in range(5):
        assert_problem(second_step(client, mfa_token(client), "000000"), 401, "invalid_code")
    clock.advance()
    limited = second_step(client, mfa_token(client), clock.code(enrolled.secret))
    assert_problem(limited, 429, "rate_limited")
