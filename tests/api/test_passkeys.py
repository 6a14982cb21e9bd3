"""Passkeys (DESIGN §10) with real WebAuthn responses from a software authenticator
(tests/support/webauthn_authenticator.py): registration, the passwordless login, a passkey as
the second factor, and each way a ceremony must fail."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from authsvc.errors import InvalidCode
from authsvc.extensions import db
from authsvc.models import Challenge, Factor, Session, User, utcnow
from authsvc.services import passkeys
from authsvc.store.database import write_transaction
from tests.support.helpers import PASSWORD, assert_problem, bearer, claims_of, signup
from tests.support.webauthn_authenticator import SoftAuthenticator, b64url, unb64url


def register_options(client, token: str, password: str = PASSWORD):
    return client.post(
        "/webauthn/register/options", json={"current_password": password}, headers=bearer(token)
    )


def register(client, token: str, authenticator: SoftAuthenticator, **kwargs: Any):
    options = register_options(client, token).get_json()
    credential = authenticator.create(options, **kwargs)
    return client.post("/webauthn/register", json=credential, headers=bearer(token))


def registered(client, username: str = "alice", **kwargs: Any):
    tokens = signup(client, username=username)
    authenticator = SoftAuthenticator(**kwargs)
    response = register(client, tokens["access_token"], authenticator)
    assert response.status_code == 201, response.get_json()
    return tokens, authenticator


def login_options(client) -> dict[str, Any]:
    response = client.post("/webauthn/login/options")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def passkey_login(client, authenticator: SoftAuthenticator, **kwargs: Any):
    return client.post("/webauthn/login", json=authenticator.get(login_options(client), **kwargs))


def assert_refused(response) -> None:
    assert_problem(response, 401, "invalid_credentials")
    assert "WWW-Authenticate" not in response.headers


# --- registration ---------------------------------------------------------------------------


def test_creation_options_ask_for_a_discoverable_verified_credential(client):
    tokens = signup(client)
    response = register_options(client, tokens["access_token"])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    options = response.get_json()
    user_id = uuid.UUID(claims_of(tokens["access_token"])["sub"])
    assert options["rp"] == {"id": "auth.test", "name": "authsvc"}
    assert options["user"] == {"id": b64url(user_id.bytes), "name": "alice", "displayName": "alice"}
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["requireResidentKey"] is True
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["excludeCredentials"] == []
    assert len(unb64url(options["challenge"])) == 32
    assert {"type": "public-key", "alg": -7} in options["pubKeyCredParams"]


def test_registration_needs_the_current_password_and_a_token(client):
    tokens = signup(client)
    token = tokens["access_token"]
    assert_problem(register_options(client, token, "wrong password"), 401, "invalid_credentials")
    empty = client.post("/webauthn/register/options", json={}, headers=bearer(token))
    assert_problem(empty, 400, "invalid_request")
    anonymous = client.post("/webauthn/register/options", json={"current_password": PASSWORD})
    assert_problem(anonymous, 401, "missing_token")
    credential = SoftAuthenticator().create(register_options(client, token).get_json())
    assert_problem(client.post("/webauthn/register", json=credential), 401, "missing_token")


def test_register_then_log_in_with_the_passkey_alone(client):
    tokens, authenticator = registered(client)
    token = tokens["access_token"]
    listed = client.get("/mfa", headers=bearer(token)).get_json()["factors"]
    assert [factor["type"] for factor in listed] == ["passkey"]
    # The existing passkey is excluded from the next registration.
    again = register_options(client, token).get_json()
    assert [item["id"] for item in again["excludeCredentials"]] == [authenticator.id]
    assert set(again["excludeCredentials"][0]["transports"]) == {"internal", "hybrid"}

    options = login_options(client)
    assert options["allowCredentials"] == [] and options["userVerification"] == "required"
    assert options["rpId"] == "auth.test"
    response = client.post("/webauthn/login", json=authenticator.get(options))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["user"]["username"] == "alice"
    assert response.headers["Cache-Control"] == "no-store"
    claims = claims_of(body["access_token"])
    assert claims["amr"] == ["hwk"] and claims["aal"] == "aal2"
    me = client.get("/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200


def test_a_synced_passkey_logs_in_as_swk(client):
    _, authenticator = registered(client, synced=True, counting=False)
    for _ in range(2):  # a counter that stays 0 is fine when the stored one is 0 too
        response = passkey_login(client, authenticator)
        assert response.status_code == 200, response.get_json()
        assert claims_of(response.get_json()["access_token"])["amr"] == ["swk"]


def test_the_registration_response_is_201_with_the_factor_id(app, client):
    tokens = signup(client)
    response = register(client, tokens["access_token"], SoftAuthenticator())
    assert response.status_code == 201
    body = response.get_json()
    assert body["type"] == "passkey"
    with app.app_context():
        factor = db.session.get(Factor, uuid.UUID(body["id"]))
        assert factor.type == "passkey" and factor.confirmed_at is not None
        assert factor.sign_count == 0 and factor.device_type == "single_device"


def test_a_first_passkey_logs_out_the_other_password_only_sessions(app, client):
    other = signup(client)
    second = client.post("/login", json={"username": "alice", "password": PASSWORD}).get_json()
    assert register(client, second["access_token"], SoftAuthenticator()).status_code == 201
    assert client.get("/me", headers=bearer(other["access_token"])).status_code == 401
    assert client.get("/me", headers=bearer(second["access_token"])).status_code == 200


@pytest.mark.parametrize(
    "wrong",
    [
        {"origin": "https://evil.test"},
        {"rp_id": "evil.test"},
        {"user_verified": False},
        {"challenge": b64url(b"x" * 32)},
    ],
    ids=["origin", "rp_id", "no_uv", "unknown_challenge"],
)
def test_a_bad_registration_is_refused(client, wrong):
    tokens = signup(client)
    response = register(client, tokens["access_token"], SoftAuthenticator(), **wrong)
    assert_problem(response, 400, "invalid_credential")
    factors = client.get("/mfa", headers=bearer(tokens["access_token"])).get_json()["factors"]
    assert factors == []


def test_a_registration_challenge_is_single_use_and_bound_to_its_user(client):
    alice = signup(client)
    bob = signup(client, username="bob")
    options = register_options(client, alice["access_token"]).get_json()
    credential = SoftAuthenticator().create(options)
    # Bob cannot answer Alice's challenge (and spends it trying).
    stolen = client.post("/webauthn/register", json=credential, headers=bearer(bob["access_token"]))
    assert_problem(stolen, 400, "invalid_credential")
    replay = client.post(
        "/webauthn/register", json=credential, headers=bearer(alice["access_token"])
    )
    assert_problem(replay, 400, "invalid_credential")


def test_the_same_credential_cannot_be_registered_twice(client):
    tokens, authenticator = registered(client)
    again = register(client, tokens["access_token"], authenticator)
    assert_problem(again, 400, "invalid_credential")


def test_an_eleventh_passkey_is_refused(client):
    tokens = signup(client)
    token = tokens["access_token"]
    for _ in range(9):
        assert register(client, token, SoftAuthenticator()).status_code == 201
    # Two ceremonies started with 9: the first to finish is the tenth, the other is refused.
    tenth, eleventh = (register_options(client, token).get_json() for _ in range(2))
    ok = client.post(
        "/webauthn/register", json=SoftAuthenticator().create(tenth), headers=bearer(token)
    )
    assert ok.status_code == 201
    late = client.post(
        "/webauthn/register", json=SoftAuthenticator().create(eleventh), headers=bearer(token)
    )
    assert_problem(late, 409, "too_many_passkeys")
    assert_problem(register_options(client, token), 409, "too_many_passkeys")


# --- the passwordless login -----------------------------------------------------------------


def test_a_replayed_assertion_is_refused(client):
    _, authenticator = registered(client)
    credential = authenticator.get(login_options(client))
    assert client.post("/webauthn/login", json=credential).status_code == 200
    assert_refused(client.post("/webauthn/login", json=credential))


def test_an_assertion_for_an_unknown_challenge_is_refused(client):
    _, authenticator = registered(client)
    options = {"challenge": b64url(b"y" * 32), "rpId": "auth.test"}
    assert_refused(client.post("/webauthn/login", json=authenticator.get(options)))


def test_an_expired_challenge_is_refused(app, client):
    _, authenticator = registered(client)
    options = login_options(client)
    with app.app_context():
        late = utcnow() - timedelta(seconds=1)
        db.session.execute(update(Challenge).values(expires_at=late))
        db.session.commit()
    assert_refused(client.post("/webauthn/login", json=authenticator.get(options)))


def test_a_login_challenge_lives_five_minutes_and_is_stored_as_a_digest(app, client):
    options = login_options(client)
    with app.app_context():
        challenge = db.session.scalars(select(Challenge)).one()
    assert challenge.kind == "webauthn_login" and challenge.user_id is None
    assert options["challenge"] not in challenge.digest
    lifetime = challenge.expires_at - challenge.created_at
    assert timedelta(minutes=5) - timedelta(seconds=1) <= lifetime <= timedelta(minutes=5)


@pytest.mark.parametrize(
    "wrong",
    [{"origin": "https://evil.test"}, {"rp_id": "evil.test"}, {"user_verified": False}],
    ids=["origin", "rp_id", "no_uv"],
)
def test_an_assertion_from_another_origin_rp_or_without_uv_is_refused(client, wrong):
    _, authenticator = registered(client)
    assert_refused(passkey_login(client, authenticator, **wrong))
    assert passkey_login(client, authenticator).status_code == 200


def test_a_sign_counter_that_does_not_go_up_is_refused(client):
    _, authenticator = registered(client)
    assert passkey_login(client, authenticator).status_code == 200  # counter 1
    assert_refused(passkey_login(client, authenticator, counter_step=0))  # 1 again: a clone?
    assert passkey_login(client, authenticator).status_code == 200  # 2


def test_an_unknown_credential_and_a_wrong_signature_are_refused(client):
    _, authenticator = registered(client)
    assert_refused(passkey_login(client, SoftAuthenticator()))
    credential = authenticator.get(login_options(client))
    impostor = SoftAuthenticator()
    forged = impostor.get({"challenge": "x", "rpId": "auth.test"})
    credential["response"]["signature"] = forged["response"]["signature"]
    assert_refused(client.post("/webauthn/login", json=credential))


def test_a_disabled_user_cannot_log_in_with_a_passkey(app, client):
    _, authenticator = registered(client)
    with app.app_context():
        db.session.execute(update(User).values(disabled_at=utcnow()))
        db.session.commit()
    assert_refused(passkey_login(client, authenticator))


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"id": "x", "rawId": "x", "type": "public-key"},
        {"id": "x", "rawId": "x", "type": "password", "response": {"clientDataJSON": "e30"}},
        {"id": 1, "rawId": "x", "type": "public-key", "response": {"clientDataJSON": "e30"}},
    ],
)
def test_a_malformed_credential_body_is_400(client, body):
    assert_problem(client.post("/webauthn/login", json=body), 400, "invalid_request")


@pytest.mark.parametrize(
    "response",
    [
        {"clientDataJSON": "!!!"},
        {"clientDataJSON": b64url(b"not json")},
        {"clientDataJSON": b64url(b'{"challenge": 5}')},
        {"clientDataJSON": b64url(b"[]"), "authenticatorData": "AA", "signature": "AA"},
    ],
)
def test_garbage_in_a_well_formed_credential_is_refused_not_a_500(client, response):
    body = {"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": response}
    assert_refused(client.post("/webauthn/login", json=body))


def test_the_login_options_body_is_optional_but_strict(client):
    assert client.post("/webauthn/login/options", json={}).status_code == 200
    empty = client.post("/webauthn/login/options", data="", content_type="text/plain")
    assert empty.status_code == 200
    refused = client.post("/webauthn/login/options", json={"username": "alice"})
    assert_problem(refused, 400, "invalid_request")


def test_parallel_uses_of_one_assertion_log_in_once(make_app, backend):
    app = make_app()
    client = app.test_client()
    _, authenticator = registered(client)
    credential = authenticator.get(login_options(client))
    parallel = 12 if backend == "sqlite" else 24
    barrier = threading.Barrier(parallel)
    statuses: list[int] = []

    def attempt() -> None:
        own = app.test_client()
        barrier.wait(timeout=10)
        statuses.append(own.post("/webauthn/login", json=credential).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [200] + [401] * (parallel - 1), statuses
    with app.app_context():
        assert db.session.scalar(select(Factor.sign_count)) == 1
        assert len(db.session.scalars(select(Session)).all()) == 2  # signup's and the passkey's


# --- a passkey as the second factor ---------------------------------------------------------


def mfa_token(client) -> str:
    response = client.post("/login", json={"username": "alice", "password": PASSWORD})
    body = assert_problem(response, 403, "mfa_required")
    assert [factor["type"] for factor in body["factors"]] == ["passkey"]
    return body["mfa_token"]


def mfa_options(client, token: str):
    return client.post("/webauthn/mfa/options", json={"mfa_token": token})


def test_second_factor_options_name_the_users_passkeys(app, client):
    _, authenticator = registered(client)
    response = mfa_options(client, mfa_token(client))
    assert response.status_code == 200, response.get_json()
    options = response.get_json()
    assert [item["id"] for item in options["allowCredentials"]] == [authenticator.id]
    assert options["userVerification"] == "required"
    with app.app_context():
        challenge = db.session.scalars(
            select(Challenge).where(Challenge.kind == "webauthn_mfa")
        ).one()
        user_id = db.session.scalar(select(User.id))
    assert challenge.user_id == user_id


def test_second_factor_options_need_a_live_mfa_token(client):
    registered(client)
    refused = mfa_options(client, "A" * 43)
    assert_problem(refused, 401, "invalid_token")
    assert "WWW-Authenticate" not in refused.headers
    assert_problem(client.post("/webauthn/mfa/options", json={}), 400, "invalid_request")


def second_factor(app, user_id, credential):
    """What /login/mfa does with a credential: the proof, then ``take`` in its transaction."""
    with app.test_request_context():
        amr, take = passkeys.second_factor_proof(user_id, credential)
        with write_transaction():
            take(utcnow())
    return amr


def test_a_passkey_as_the_second_factor_is_taken_once(app, client):
    _, authenticator = registered(client)
    options = mfa_options(client, mfa_token(client)).get_json()
    credential = authenticator.get(options)
    with app.app_context():
        user_id = db.session.scalar(select(User.id))
    assert second_factor(app, user_id, credential) == "hwk"
    # The same assertion again: the challenge is spent (and the counter has moved on).
    with pytest.raises(InvalidCode):
        second_factor(app, user_id, credential)
    with app.app_context():
        assert db.session.scalar(select(Factor.sign_count)) == 1


def test_a_second_factor_of_another_user_or_a_login_challenge_is_refused(app, client):
    _, alices = registered(client)
    _, bobs = registered(client, username="bob")
    with app.app_context():
        alice = db.session.scalar(select(User.id).where(User.username == "alice"))
    options = mfa_options(client, mfa_token(client)).get_json()
    with pytest.raises(InvalidCode):  # Bob's passkey for Alice's second step
        second_factor(app, alice, bobs.get(options))
    # A passwordless login's challenge is no second factor's.
    with pytest.raises(InvalidCode):
        second_factor(app, alice, alices.get(login_options(client)))
    assert second_factor(app, alice, alices.get(options)) == "hwk"


def test_a_second_factor_without_uv_or_a_bad_challenge_is_refused(app, client):
    _, authenticator = registered(client)
    with app.app_context():
        user_id = db.session.scalar(select(User.id))
    options = mfa_options(client, mfa_token(client)).get_json()
    with pytest.raises(InvalidCode):
        second_factor(app, user_id, authenticator.get(options, user_verified=False))
    with pytest.raises(InvalidCode):  # verified, but no such challenge: refused at take()
        second_factor(app, user_id, authenticator.get(options, challenge=b64url(b"z" * 32)))
    # The untouched challenge still works once.
    assert second_factor(app, user_id, authenticator.get(options)) == "hwk"


# --- through /login/mfa ---------------------------------------------------------------------


def test_password_then_passkey_logs_in_at_aal2_once(client):
    _, authenticator = registered(client)
    token = mfa_token(client)
    credential = authenticator.get(mfa_options(client, token).get_json())
    response = client.post("/login/mfa", json={"mfa_token": token, "credential": credential})
    assert response.status_code == 200, response.get_json()
    claims = claims_of(response.get_json()["access_token"])
    assert claims["amr"] == ["pwd", "hwk"] and claims["aal"] == "aal2"
    # The same assertion with a fresh mfa_token: its challenge is spent.
    replay = client.post(
        "/login/mfa", json={"mfa_token": mfa_token(client), "credential": credential}
    )
    assert_problem(replay, 401, "invalid_code")


def test_the_second_step_takes_a_code_or_a_credential_not_both(client):
    _, authenticator = registered(client)
    token = mfa_token(client)
    credential = authenticator.get(mfa_options(client, token).get_json())
    both = {"mfa_token": token, "credential": credential, "code": "123456"}
    assert_problem(client.post("/login/mfa", json=both), 400, "invalid_request")
    neither = {"mfa_token": token}
    assert_problem(client.post("/login/mfa", json=neither), 400, "invalid_request")


def test_a_first_passkey_comes_with_recovery_codes_that_can_remove_it(client):
    tokens = signup(client)
    access = tokens["access_token"]
    first = register(client, access, SoftAuthenticator())
    assert first.status_code == 201
    body = first.get_json()
    assert len(body["recovery_codes"]) == 10
    second = register(client, access, SoftAuthenticator())
    assert "recovery_codes" not in second.get_json()  # only a first factor brings a set
    # A lost passkey: a recovery code (with the password) removes it.
    removed = client.delete(
        f"/mfa/{body['id']}",
        json={"current_password": PASSWORD, "code": body["recovery_codes"][0]},
        headers=bearer(access),
    )
    assert removed.status_code == 204


def test_one_credential_registered_by_two_accounts_at_once_is_kept_once(make_app):
    app = make_app()
    client = app.test_client()
    authenticator = SoftAuthenticator()
    bodies = []
    for name in ("alice", "bob"):
        token = signup(client, username=name)["access_token"]
        options = register_options(client, token).get_json()
        bodies.append((token, authenticator.create(options)))
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = []

    def attempt(token: str, credential: dict[str, Any]) -> None:
        own = app.test_client()
        barrier.wait(timeout=10)
        response = own.post("/webauthn/register", json=credential, headers=bearer(token))
        statuses.append(response.status_code)

    threads = [threading.Thread(target=attempt, args=body) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [201, 400], statuses  # never a 500
    with app.app_context():
        assert len(db.session.scalars(select(Factor)).all()) == 1


def test_a_credential_whose_ids_disagree_is_not_registered(client):
    token = signup(client)["access_token"]
    credential = SoftAuthenticator().create(register_options(client, token).get_json())
    other = b64url(b"\x01" * 32)  # id and rawId agree with each other, not with the key's id
    credential.update(id=other, rawId=other)
    response = client.post("/webauthn/register", json=credential, headers=bearer(token))
    assert_problem(response, 400, "invalid_credential")
    assert client.get("/mfa", headers=bearer(token)).get_json()["factors"] == []


def test_client_data_nested_a_thousand_levels_deep_is_refused_not_a_500(client):
    registered(client)
    credential = SoftAuthenticator().get(login_options(client))
    credential["response"]["clientDataJSON"] = b64url(b"[" * 1100)
    assert_refused(client.post("/webauthn/login", json=credential))


def test_a_passkey_does_not_log_in_an_unverified_address_when_verification_is_required(
    make_app, mail_server
):
    app = make_app()
    client = app.test_client()
    _, authenticator = registered(client)
    strict = make_app(AUTHSVC_EMAIL_VERIFICATION="required", AUTHSVC_SMTP_URL=mail_server.url)
    other = strict.test_client()
    response = other.post("/webauthn/login", json=authenticator.get(login_options(other)))
    assert_problem(response, 403, "email_not_verified")
