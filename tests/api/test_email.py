"""E-mail verification, password reset and e-mail change (DESIGN §9), every endpoint and error,
with the mail read from a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from authsvc.extensions import db
from authsvc.models import OneTimeToken, utcnow
from tests.support.helpers import OTHER_PASSWORD, PASSWORD, assert_problem, bearer, login
from tests.support.smtp import html_of, text_of, token_in

NEW_PASSWORD = "a brand new and unusual passphrase"


def signup_with(client, username="alice", email="alice@example.com", **extra):
    body = {"username": username, "password": PASSWORD, "email": email, **extra}
    response = client.post("/signup", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def assert_bad_link(response):
    """A mailed token that cannot be used: 400 invalid_token, and no bearer challenge."""
    assert_problem(response, 400, "invalid_token")
    assert "WWW-Authenticate" not in response.headers


def expire_tokens(app):
    with app.app_context():
        db.session.execute(update(OneTimeToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()


# -- signup and verification ----------------------------------------------------------------------


def test_signup_with_an_address_mails_a_verification_link(mail_client, mail_server):
    body = signup_with(mail_client, email="Alice@EXAMPLE.com")
    assert body["user"]["email"] == "Alice@example.com"  # domain normalised, local part kept
    assert body["user"]["email_verified"] is False
    (message,) = mail_server.wait_for(1, to="Alice@example.com")
    assert message["Subject"] == "Confirm your e-mail address"
    assert message["To"] == "Alice@example.com"
    token = token_in(message)
    assert f"https://auth.test/email-action?action=verify&token={token}" in text_of(message)
    assert f"token={token}" in html_of(message)

    response = mail_client.post("/email/verify", json={"token": token})
    assert response.status_code == 200
    assert response.get_json()["email_verified"] is True
    me = mail_client.get("/me", headers=bearer(body["access_token"])).get_json()
    assert me["email"] == "Alice@example.com" and me["email_verified"] is True


def test_a_verification_link_works_once(mail_client, mail_server):
    signup_with(mail_client)
    token = token_in(mail_server.wait_for(1)[0])
    assert mail_client.post("/email/verify", json={"token": token}).status_code == 200
    assert_bad_link(mail_client.post("/email/verify", json={"token": token}))


@pytest.mark.parametrize("token", ["", "x" * 43, "not a token", "A" * 44, "é" * 43])
def test_unknown_or_malformed_tokens_are_refused(mail_client, token):
    assert_bad_link(mail_client.post("/email/verify", json={"token": token}))
    body = {"token": token, "new_password": NEW_PASSWORD}
    assert_bad_link(mail_client.post("/password/reset", json=body))


def test_an_expired_link_is_refused(mail_app, mail_client, mail_server):
    signup_with(mail_client)
    token = token_in(mail_server.wait_for(1)[0])
    expire_tokens(mail_app)
    assert_bad_link(mail_client.post("/email/verify", json={"token": token}))


def test_signup_address_is_checked_and_unique(mail_client):
    response = mail_client.post(
        "/signup", json={"username": "bob", "password": PASSWORD, "email": "not-an-address"}
    )
    assert_problem(response, 400, "invalid_email")
    signup_with(mail_client, username="alice", email="alice@example.com")
    response = mail_client.post(
        "/signup", json={"username": "bob", "password": PASSWORD, "email": "ALICE@example.COM"}
    )
    assert_problem(response, 409, "email_taken")
    response = mail_client.post(
        "/signup", json={"username": "Alice", "password": PASSWORD, "email": "bob@example.com"}
    )
    assert_problem(response, 409, "username_taken")


def test_signup_without_an_address_still_works(mail_client, mail_server):
    response = mail_client.post("/signup", json={"username": "carol", "password": PASSWORD})
    assert response.status_code == 201
    assert response.get_json()["user"]["email"] is None
    assert response.get_json()["user"]["email_verified"] is False
    assert mail_server.messages() == []


def test_resend_to_an_address(mail_client, mail_server):
    signup_with(mail_client)
    first = token_in(mail_server.wait_for(1)[0])
    response = mail_client.post("/email/verification", json={"email": "alice@example.com"})
    assert response.status_code == 202
    second = token_in(mail_server.wait_for(2)[1])
    # The newer link voids the older one.
    assert_bad_link(mail_client.post("/email/verify", json={"token": first}))
    assert mail_client.post("/email/verify", json={"token": second}).status_code == 200


def test_resend_to_the_callers_own_address(mail_client, mail_server):
    tokens = signup_with(mail_client)
    mail_server.wait_for(1)
    response = mail_client.post("/email/verification", headers=bearer(tokens["access_token"]))
    assert response.status_code == 202
    token = token_in(mail_server.wait_for(2)[1])
    assert mail_client.post("/email/verify", json={"token": token}).status_code == 200
    response = mail_client.post("/email/verification", headers=bearer(tokens["access_token"]))
    assert_problem(response, 409, "email_already_verified")


def test_resend_errors(mail_client, mail_server):
    response = mail_client.post("/signup", json={"username": "carol", "password": PASSWORD})
    access = response.get_json()["access_token"]
    assert_problem(mail_client.post("/email/verification", headers=bearer(access)), 400, "no_email")
    # No address and no token: whose address?
    assert_problem(mail_client.post("/email/verification"), 401, "missing_token")
    assert_problem(
        mail_client.post("/email/verification", json={"email": "nope"}), 400, "invalid_email"
    )
    response = mail_client.post("/email/verification", headers=bearer("junk"))
    assert response.status_code == 401
    # An address nobody uses: accepted, nothing sent.
    response = mail_client.post("/email/verification", json={"email": "nobody@example.com"})
    assert response.status_code == 202
    assert mail_server.messages() == []


def test_verification_off(make_app, mail_server):
    client = make_app(
        AUTHSVC_SMTP_URL=mail_server.url, AUTHSVC_EMAIL_VERIFICATION="off"
    ).test_client()
    body = signup_with(client)
    assert body["user"]["email_verified"] is False
    response = client.post("/email/verification", json={"email": "alice@example.com"})
    assert_problem(response, 403, "feature_disabled")
    # A reset still works: it proves the address on the way.
    assert client.post("/password/forgot", json={"email": "alice@example.com"}).status_code == 202
    (message,) = mail_server.wait_for(1)
    assert message["Subject"] == "Reset your password"


def test_verification_required(make_app, mail_server):
    client = make_app(
        AUTHSVC_SMTP_URL=mail_server.url, AUTHSVC_EMAIL_VERIFICATION="required"
    ).test_client()
    response = client.post("/signup", json={"username": "alice", "password": PASSWORD})
    assert_problem(response, 400, "email_required")
    body = signup_with(client)
    assert set(body) == {"user"}  # no tokens until the address is verified
    # The right password, unverified: 403, and only then.
    assert_problem(
        client.post("/login", json={"username": "alice", "password": PASSWORD}),
        403,
        "email_not_verified",
    )
    assert_problem(
        client.post("/login", json={"username": "alice", "password": OTHER_PASSWORD}),
        401,
        "invalid_credentials",
    )
    token = token_in(mail_server.wait_for(1)[0])
    assert client.post("/email/verify", json={"token": token}).status_code == 200
    assert login(client)["user"]["email_verified"] is True


# -- password reset -------------------------------------------------------------------------------


def test_reset_flow_revokes_every_session_and_verifies_the_address(mail_client, mail_server):
    tokens = signup_with(mail_client)
    other = login(mail_client)
    mail_server.wait_for(1)
    response = mail_client.post("/password/forgot", json={"email": "alice@example.com"})
    assert response.status_code == 202
    message = mail_server.wait_for(2)[1]
    assert message["Subject"] == "Reset your password"
    token = token_in(message)
    assert "action=reset" in text_of(message)

    response = mail_client.post(
        "/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 204
    for pair in (tokens, other):
        assert mail_client.get("/me", headers=bearer(pair["access_token"])).status_code == 401
        assert (
            mail_client.post("/refresh", headers=bearer(pair["refresh_token"])).status_code == 401
        )
    assert_problem(
        mail_client.post("/login", json={"username": "alice", "password": PASSWORD}),
        401,
        "invalid_credentials",
    )
    fresh = login(mail_client, password=NEW_PASSWORD)
    assert fresh["user"]["email_verified"] is True
    notice = mail_server.wait_for(3)[2]
    assert notice["Subject"] == "Your password was changed"
    assert "token=" not in text_of(notice)
    # Used once.
    body = {"token": token, "new_password": "yet another unusual passphrase"}
    assert_bad_link(mail_client.post("/password/reset", json=body))


def test_a_weak_new_password_leaves_the_link_usable(mail_client, mail_server):
    signup_with(mail_client)
    mail_client.post("/password/forgot", json={"email": "alice@example.com"})
    token = token_in(mail_server.wait_for(2)[1])
    response = mail_client.post("/password/reset", json={"token": token, "new_password": "short"})
    assert_problem(response, 400, "weak_password")
    response = mail_client.post(
        "/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 204


def test_forgot_for_an_unknown_or_disabled_address_sends_nothing(
    mail_app, mail_client, mail_server, runner
):
    signup_with(mail_client)
    mail_server.wait_for(1)
    assert (
        mail_client.post("/password/forgot", json={"email": "nobody@example.com"}).status_code
        == 202
    )
    result = mail_app.test_cli_runner().invoke(args=["users", "disable", "alice"])
    assert result.exit_code == 0, result.output
    assert (
        mail_client.post("/password/forgot", json={"email": "alice@example.com"}).status_code == 202
    )
    with pytest.raises(AssertionError):
        mail_server.wait_for(2, timeout=1.5)


def test_a_password_change_voids_outstanding_reset_links(mail_client, mail_server):
    tokens = signup_with(mail_client)
    mail_client.post("/password/forgot", json={"email": "alice@example.com"})
    token = token_in(mail_server.wait_for(2)[1])
    response = mail_client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": OTHER_PASSWORD},
        headers=bearer(tokens["access_token"]),
    )
    assert response.status_code == 204
    assert_bad_link(
        mail_client.post("/password/reset", json={"token": token, "new_password": NEW_PASSWORD})
    )


def test_a_newer_reset_link_voids_the_older(mail_client, mail_server):
    signup_with(mail_client)
    for _ in range(2):
        mail_client.post("/password/forgot", json={"email": "alice@example.com"})
    first, second = (token_in(m) for m in mail_server.wait_for(3)[1:3])
    assert_bad_link(
        mail_client.post("/password/reset", json={"token": first, "new_password": NEW_PASSWORD})
    )
    response = mail_client.post(
        "/password/reset", json={"token": second, "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 204


def test_an_expired_reset_link_is_refused(mail_app, mail_client, mail_server):
    signup_with(mail_client)
    mail_client.post("/password/forgot", json={"email": "alice@example.com"})
    token = token_in(mail_server.wait_for(2)[1])
    expire_tokens(mail_app)
    assert_bad_link(
        mail_client.post("/password/reset", json={"token": token, "new_password": NEW_PASSWORD})
    )
    login(mail_client)  # the password is unchanged


def test_tokens_are_bound_to_their_purpose(mail_client, mail_server):
    signup_with(mail_client)
    verify_token = token_in(mail_server.wait_for(1)[0])
    mail_client.post("/password/forgot", json={"email": "alice@example.com"})
    reset_token = token_in(mail_server.wait_for(2)[1])
    assert_bad_link(
        mail_client.post(
            "/password/reset", json={"token": verify_token, "new_password": NEW_PASSWORD}
        )
    )
    assert_bad_link(mail_client.post("/email/verify", json={"token": reset_token}))
    # Neither was spent by the wrong use.
    assert mail_client.post("/email/verify", json={"token": verify_token}).status_code == 200
    response = mail_client.post(
        "/password/reset", json={"token": reset_token, "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 204


# -- e-mail change --------------------------------------------------------------------------------


def change(client, access, email, password=PASSWORD):
    return client.post(
        "/email/change",
        json={"email": email, "current_password": password},
        headers=bearer(access),
    )


def test_change_flow_notifies_the_old_address(mail_client, mail_server):
    tokens = signup_with(mail_client)
    mail_client.post("/email/verify", json={"token": token_in(mail_server.wait_for(1)[0])})
    assert change(mail_client, tokens["access_token"], "alice@new.example").status_code == 202
    (message,) = mail_server.wait_for(1, to="alice@new.example")
    assert message["Subject"] == "Confirm your new e-mail address"
    # Until the link is followed the old address stays.
    me = mail_client.get("/me", headers=bearer(tokens["access_token"])).get_json()
    assert me["email"] == "alice@example.com"
    response = mail_client.post("/email/verify", json={"token": token_in(message)})
    assert response.status_code == 200
    assert response.get_json()["email"] == "alice@new.example"
    assert response.get_json()["email_verified"] is True
    notices = mail_server.wait_for(2, to="alice@example.com")
    assert notices[1]["Subject"] == "Your e-mail address was changed"
    assert "alice@new.example" in text_of(notices[1])
    # The old address no longer resets the password; the new one does.
    mail_client.post("/password/forgot", json={"email": "alice@example.com"})
    mail_client.post("/password/forgot", json={"email": "alice@new.example"})
    mail_server.wait_for(2, to="alice@new.example")
    assert len(mail_server.messages(to="alice@example.com")) == 2


def test_change_errors(mail_client, mail_server):
    tokens = signup_with(mail_client)
    signup_with(mail_client, username="bob", email="bob@example.com")
    access = tokens["access_token"]
    assert_problem(
        change(mail_client, access, "alice@new.example", OTHER_PASSWORD), 401, "invalid_credentials"
    )
    assert_problem(change(mail_client, access, "nope"), 400, "invalid_email")
    assert_problem(change(mail_client, access, "ALICE@example.com"), 400, "invalid_request")
    assert (
        mail_client.post(
            "/email/change", json={"email": "x@example.com", "current_password": PASSWORD}
        ).status_code
        == 401
    )
    # Another account's address: the same answer, and no mail to it.
    mail_server.wait_for(2)
    assert change(mail_client, access, "Bob@example.com").status_code == 202
    with pytest.raises(AssertionError):
        mail_server.wait_for(2, to="bob@example.com", timeout=1.5)


def test_a_change_confirmed_after_the_address_was_taken_is_refused(mail_client, mail_server):
    tokens = signup_with(mail_client)
    assert change(mail_client, tokens["access_token"], "shared@example.com").status_code == 202
    token = token_in(mail_server.wait_for(1, to="shared@example.com")[0])
    signup_with(mail_client, username="bob", email="shared@example.com")
    assert_problem(mail_client.post("/email/verify", json={"token": token}), 409, "email_taken")


# -- the link page --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_opening_the_link_spends_nothing(mail_client, mail_server, method):
    signup_with(mail_client)
    message = mail_server.wait_for(1)[0]
    token = token_in(message)
    for _ in range(3):  # a scanner, a preview, the user
        response = mail_client.open(f"/email-action?action=verify&token={token}", method=method)
        assert response.status_code == 200
        assert response.mimetype == "text/html"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Cache-Control"] == "no-store"
        assert "script-src 'nonce-" in response.headers["Content-Security-Policy"]
    assert mail_client.post("/email/verify", json={"token": token}).status_code == 200


def test_the_link_page_never_echoes_the_token(mail_client):
    response = mail_client.get("/email-action?action=reset&token=<script>alert(1)</script>")
    page = response.get_data(as_text=True)
    assert "<script>alert(1)" not in page
    assert "Choose a new password" in page
    response = mail_client.get("/email-action?action=<b>x</b>")
    assert "This link is incomplete" in response.get_data(as_text=True)


# -- bodies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/password/forgot", {}),
        ("/password/forgot", {"email": 5}),
        ("/password/forgot", {"email": "a@example.com", "extra": 1}),
        ("/email/verify", {}),
        ("/password/reset", {"token": "x"}),
        ("/email/verification", {"email": ["a@example.com"]}),
    ],
)
def test_malformed_bodies_are_400(mail_client, path, body):
    assert_problem(mail_client.post(path, json=body), 400, "invalid_request")


def test_bodies_must_be_json(mail_client):
    response = mail_client.post("/password/forgot", data="email=a@example.com")
    assert_problem(response, 415, "unsupported_media_type")


# -- what a new password voids ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["reset", "change", "operator"])
def test_a_new_password_voids_a_pending_address_change(mail_app, mail_client, mail_server, how):
    """Whoever knew the old password (an attacker who asked to move the address to theirs)
    cannot confirm that change after the owner has set a new password."""
    tokens = signup_with(mail_client)
    assert change(mail_client, tokens["access_token"], "attacker@evil.example").status_code == 202
    pending = token_in(mail_server.wait_for(1, to="attacker@evil.example")[0])
    if how == "reset":
        mail_client.post("/password/forgot", json={"email": "alice@example.com"})
        reset = token_in(mail_server.wait_for(2, to="alice@example.com")[1])
        body = {"token": reset, "new_password": NEW_PASSWORD}
        assert mail_client.post("/password/reset", json=body).status_code == 204
    elif how == "change":
        response = mail_client.post(
            "/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(tokens["access_token"]),
        )
        assert response.status_code == 204
    else:
        result = mail_app.test_cli_runner().invoke(
            args=["users", "set-password", "alice", "--password-stdin"], input=f"{NEW_PASSWORD}\n"
        )
        assert result.exit_code == 0, result.output
    assert_bad_link(mail_client.post("/email/verify", json={"token": pending}))
    me = login(mail_client, password=NEW_PASSWORD)["user"]
    assert me["email"] == "alice@example.com"


def test_a_password_change_is_notified(mail_client, mail_server):
    tokens = signup_with(mail_client)
    response = mail_client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(tokens["access_token"]),
    )
    assert response.status_code == 204
    notice = [m for m in mail_server.wait_for(2) if m["Subject"] == "Your password was changed"]
    assert len(notice) == 1 and "was just changed" in text_of(notice[0])
