"""Attacks on the second factors (DESIGN §5 throttling, §10 MFA): parallel use of one TOTP
code, one recovery code and one mfa_token, guessing codes and current passwords, a stolen
aal1 access token adding or removing factors, secrets at rest and in the logs, an mfa_token
taken for a bearer token (and back), and a passkey assertion moved between the passwordless
login and the second step. On SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select, update

from authsvc.extensions import db
from authsvc.models import Challenge, Factor, RecoveryCode, Session, User
from authsvc.observability import JsonFormatter
from tests.support.helpers import (
    OTHER_PASSWORD,
    PASSWORD,
    assert_invalid_token,
    assert_problem,
    bearer,
    signup,
)
from tests.support.mfa import Clock, enrol_totp, mfa_token
from tests.support.webauthn_authenticator import SoftAuthenticator

PARALLEL = 12
# A limit no other test on the machine uses, so the shared Redis holds no counter of theirs.
HIGH = "1000/minute"


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


@pytest.fixture
def app(make_app):
    """Each race and refusal judged on its own: the per-user code budget, which is on even
    when throttling is off, set out of reach (the throttling tests make their own apps)."""
    return make_app(AUTHSVC_RATELIMIT_MFA_CODE=HIGH)


def _address() -> str:
    """A client address of this test alone (the Redis of PostgreSQL runs is shared by every
    test run on the machine, and per-address counters are keyed by address)."""
    return "10." + ".".join(str(secrets.randbelow(250) + 1) for _ in range(3))


def _client(app, address: str | None = None):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address or _address()
    return client


def _throttled(make_app, **limits: str):
    """An app with throttling on (the tests' base config turns it off)."""
    return make_app(AUTHSVC_RATELIMIT_ENABLED="true", **limits)


def _second_step(client, token: str, code: str, **kwargs: Any):
    return client.post("/login/mfa", json={"mfa_token": token, "code": code}, **kwargs)


def _outcome(response) -> tuple[int, str | None]:
    body = response.get_json(silent=True) or {}
    return response.status_code, body.get("code") if response.status_code != 200 else None


def _assert_rate_limited(response) -> None:
    assert_problem(response, 429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def _in_parallel(count: int, attempt: Callable[[int], Any]) -> list[Any]:
    """``attempt(i)`` for i in range(count), in threads released together."""
    barrier = threading.Barrier(count)
    answers: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            answer = attempt(index)
        except BaseException as error:  # reported below, not lost in the thread
            with lock:
                errors.append(error)
            return
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(answers) == count
    return answers


def _sessions(app) -> Counter[str]:
    """How many sessions there are at each assurance level."""
    with app.app_context():
        levels = db.session.scalars(select(Session.aal)).all()
        db.session.rollback()
    return Counter(levels)


def _user_id(app, username: str = "alice"):
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.username == username))
        db.session.rollback()
    return user_id


def _recovery_codes_left(app, username: str = "alice") -> int:
    user_id = _user_id(app, username)
    with app.app_context():
        left = db.session.scalar(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        )
        db.session.rollback()
    return int(left)


# --- 1-3: parallel use of one code, one recovery code, one mfa_token -----------------------


def test_one_totp_code_used_by_12_logins_at_once_logs_in_once(app, clock):
    client = app.test_client()
    enrolled = enrol_totp(client, signup(client)["access_token"], clock)
    clock.advance()  # the confirmation took the current step
    code = clock.code(enrolled.secret)
    tokens = [mfa_token(client) for _ in range(PARALLEL)]  # each login its own mfa_token

    answers = _in_parallel(
        PARALLEL, lambda i: _outcome(_second_step(app.test_client(), tokens[i], code))
    )

    assert Counter(answers) == {(200, None): 1, (401, "invalid_code"): PARALLEL - 1}, answers
    # The signup's (raised to aal2 by the enrolment it made), and one second step.
    assert _sessions(app) == {"aal2": 2}


def test_one_recovery_code_used_by_12_logins_at_once_logs_in_once(app, clock):
    client = app.test_client()
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    code = enrolled.recovery_codes[0]
    tokens = [mfa_token(client) for _ in range(PARALLEL)]

    answers = _in_parallel(
        PARALLEL, lambda i: _outcome(_second_step(app.test_client(), tokens[i], code))
    )

    assert Counter(answers) == {(200, None): 1, (401, "invalid_code"): PARALLEL - 1}, answers
    assert _sessions(app)["aal2"] == 2  # the enrolling session, and one second step
    listed = client.get("/mfa", headers=bearer(access)).get_json()
    assert listed["recovery_codes_left"] == 9


def test_one_mfa_token_with_12_valid_codes_at_once_logs_in_once(app, clock):
    client = app.test_client()
    enrolled = enrol_totp(client, signup(client)["access_token"], clock)
    clock.advance()
    # Twelve different codes, each good on its own: the ten recovery codes, this step's TOTP
    # code and the next step's (within the drift).
    codes = [*enrolled.recovery_codes, clock.code(enrolled.secret), clock.code(enrolled.secret, 1)]
    assert len(set(codes)) == PARALLEL
    token = mfa_token(client)

    answers = _in_parallel(
        PARALLEL, lambda i: _outcome(_second_step(app.test_client(), token, codes[i]))
    )

    assert answers.count((200, None)) == 1, answers
    assert all(
        answer in {(200, None), (401, "invalid_token"), (401, "invalid_code")} for answer in answers
    ), answers
    assert _sessions(app)["aal2"] == 2  # the enrolling session, and one second step
    # Only the winner's proof was spent: one recovery code or the TOTP steps, not both.
    spent_recovery = 10 - _recovery_codes_left(app)
    with app.app_context():
        last_step = db.session.scalar(select(Factor.last_step))
    spent_totp = last_step > clock.step - 1  # the confirmation took clock.step - 1
    assert spent_recovery + int(spent_totp) == 1, (spent_recovery, last_step, clock.step)
    # And the token is spent.
    assert_problem(
        _second_step(client, token, clock.code(enrolled.secret, 1)), 401, "invalid_token"
    )


# --- 4: one mfa_token's five attempts under concurrency --------------------------------------


def test_20_parallel_wrong_codes_on_one_mfa_token_evaluate_five(make_app, clock):
    # The per-user code budget raised out of the way: the token's own 5 attempts alone.
    app = _throttled(make_app, AUTHSVC_RATELIMIT_MFA_CODE=HIGH, AUTHSVC_RATELIMIT_MFA_ADDRESS=HIGH)
    address = _address()
    client = _client(app, address)
    enrolled = enrol_totp(client, signup(client)["access_token"], clock)
    token = mfa_token(client)
    clock.advance()
    right = clock.code(enrolled.secret)
    wrong = [f"{i:06d}" for i in range(21) if f"{i:06d}" != right][:20]  # 20 different ones

    answers = _in_parallel(
        20, lambda i: _outcome(_second_step(_client(app, address), token, wrong[i]))
    )

    assert Counter(answers) == {(401, "invalid_code"): 5, (401, "invalid_token"): 15}, answers
    with app.app_context():
        assert db.session.scalar(select(Challenge.attempts)) == 5
    # Exhausted: not even the right code now; a new login's token takes it.
    assert_problem(_second_step(client, token, right), 401, "invalid_token")
    assert _second_step(client, mfa_token(client), right).status_code == 200


def test_20_parallel_wrong_codes_under_default_limits_evaluate_five_then_the_user_waits(
    make_app, clock
):
    # The defaults: 5 attempts per token and 5 wrong codes a minute per user. The token's
    # count is taken first, so its 5 are all that reach the user's budget (which they use up).
    app = _throttled(make_app)
    address = _address()
    client = _client(app, address)
    enrolled = enrol_totp(client, signup(client)["access_token"], clock)
    token = mfa_token(client)
    clock.advance()
    right = clock.code(enrolled.secret)
    wrong = "000000" if right != "000000" else "111111"

    answers = _in_parallel(
        20, lambda i: _outcome(_second_step(_client(app, address), token, wrong))
    )

    # Which limit bites first: the token's count, taken before the user's budget is asked, so
    # the 15 beyond it are invalid_token, and the 5 it admits fit the budget exactly (no 429).
    assert Counter(answers) == {(401, "invalid_code"): 5, (401, "invalid_token"): 15}, answers
    with app.app_context():
        assert db.session.scalar(select(Challenge.attempts)) == 5
    # Those five wrong codes were the user's whole budget: a new token with the right code waits.
    _assert_rate_limited(_second_step(client, mfa_token(client), right))


# --- 5: wrong codes throttled per user and per client address --------------------------------


def test_five_wrong_codes_then_even_the_right_one_waits_and_only_for_that_user(make_app, clock):
    app = _throttled(make_app)  # the default 5/minute;20/hour;100/day
    client = _client(app)
    alice = enrol_totp(client, signup(client)["access_token"], clock)
    bob = enrol_totp(client, signup(client, "bob")["access_token"], clock)
    clock.advance()
    right = clock.code(alice.secret)
    wrong = "000000" if right != "000000" else "111111"
    for _ in range(5):  # each with a fresh mfa_token: the token's own limit is not what bites
        assert_problem(_second_step(client, mfa_token(client), wrong), 401, "invalid_code")
    # Reserved before the code is looked at: the right code is refused too, as is a recovery
    # code, and from another address.
    _assert_rate_limited(_second_step(client, mfa_token(client), right))
    _assert_rate_limited(_second_step(client, mfa_token(client), alice.recovery_codes[0]))
    _assert_rate_limited(_second_step(_client(app), mfa_token(client), right))
    # Bob is not affected.
    assert _second_step(client, mfa_token(client, "bob"), clock.code(bob.secret)).status_code == 200
    # And the refused right codes were not spent.
    assert _recovery_codes_left(app) == 10


def test_wrong_codes_at_every_mfa_endpoint_share_one_budget(make_app, clock):
    app = _throttled(make_app)
    client = _client(app)
    access = signup(client)["access_token"]
    enrolled = enrol_totp(client, access, clock)
    clock.advance()
    right = clock.code(enrolled.secret)
    wrong = "000000" if right != "000000" else "111111"
    headers = bearer(access)
    reauth = {"current_password": PASSWORD, "code": wrong}
    guesses = [
        lambda: _second_step(client, mfa_token(client), wrong),
        lambda: _second_step(client, mfa_token(client), "aaaaa-aaaaa"),  # a wrong recovery code
        lambda: client.delete(f"/mfa/{enrolled.factor_id}", json=reauth, headers=headers),
        lambda: client.delete(f"/mfa/{enrolled.factor_id}", json=reauth, headers=headers),
        lambda: client.post("/mfa/recovery-codes", json=reauth, headers=headers),
    ]
    for guess in guesses:
        assert_problem(guess(), 401, "invalid_code")
    _assert_rate_limited(_second_step(client, mfa_token(client), right))
    body = {"current_password": PASSWORD, "code": right}
    _assert_rate_limited(client.delete(f"/mfa/{enrolled.factor_id}", json=body, headers=headers))


def test_the_second_step_is_throttled_per_client_address(make_app, clock):
    app = _throttled(make_app, AUTHSVC_RATELIMIT_MFA_ADDRESS="3/minute")
    client = _client(app)  # signup and the password steps from an address of their own
    enrolled = enrol_totp(client, signup(client)["access_token"], clock)
    clock.advance()
    right = clock.code(enrolled.secret)
    attacker = _client(app)
    for _ in range(3):
        assert_problem(_second_step(attacker, "A" * 43, right), 401, "invalid_token")
    # The fourth request from that address is refused before anything is looked at, even
    # with a live token and the right code...
    token = mfa_token(client)
    _assert_rate_limited(_second_step(attacker, token, right))
    # ...which another address then uses (the 429 spent neither).
    done = _second_step(app.test_client(), token, right, environ_base={"REMOTE_ADDR": _address()})
    assert done.status_code == 200, done.get_json()


# --- 6-7: a stolen aal1 access token ---------------------------------------------------------


def test_a_stolen_access_token_cannot_add_a_factor_and_guessing_the_password_is_throttled(
    make_app, clock
):
    app = _throttled(
        make_app, AUTHSVC_RATELIMIT_LOGIN_USERNAME="3/minute", AUTHSVC_RATELIMIT_MFA_ADDRESS=HIGH
    )
    owner = _client(app)
    stolen = bearer(signup(owner)["access_token"])
    attacker = _client(app)

    def enrol(password: str | None, address: str | None = None):
        body = {} if password is None else {"current_password": password}
        return _client(app, address).post("/mfa/totp", json=body, headers=stolen)

    def passkey(password: str | None, address: str | None = None):
        body = {} if password is None else {"current_password": password}
        return _client(app, address).post("/webauthn/register/options", json=body, headers=stolen)

    assert_problem(enrol(None), 400, "invalid_request")
    assert_problem(passkey(None), 400, "invalid_request")
    # Three wrong guesses, from three addresses, over both endpoints: the user's budget.
    assert_problem(enrol(OTHER_PASSWORD), 401, "invalid_credentials")
    assert_problem(passkey(OTHER_PASSWORD), 401, "invalid_credentials")
    assert_problem(enrol("a wrong guess number three"), 401, "invalid_credentials")
    # Now even the right password waits, at each endpoint that takes it.
    _assert_rate_limited(enrol(PASSWORD))
    _assert_rate_limited(passkey(PASSWORD))
    _assert_rate_limited(
        attacker.post(
            "/mfa/recovery-codes",
            json={"current_password": PASSWORD, "code": "000000"},
            headers=stolen,
        )
    )
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Factor)) == 0
        assert db.session.scalar(select(func.count()).select_from(Challenge)) == 0
    assert owner.get("/mfa", headers=stolen).get_json() == {"factors": [], "recovery_codes_left": 0}
    # Per user: Bob enrols from the same addresses; and Alice's own login still works.
    bob = bearer(signup(owner, "bob")["access_token"])
    started = attacker.post("/mfa/totp", json={"current_password": PASSWORD}, headers=bob)
    assert started.status_code == 201, started.get_json()
    login = owner.post("/login", json={"username": "alice", "password": PASSWORD})
    assert login.status_code == 200, login.get_json()


def test_a_stolen_access_token_cannot_remove_a_factor_or_renew_codes_without_both(app, clock):
    client = app.test_client()
    access = signup(client)["access_token"]  # the session that enrolled lives on, at aal2
    stolen = bearer(access)
    enrolled = enrol_totp(client, access, clock)
    bob = enrol_totp(client, signup(client, "bob")["access_token"], clock)
    clock.advance()
    seen = clock.code(enrolled.secret)  # the owner's login, watched over a shoulder
    assert _second_step(client, mfa_token(client), seen).status_code == 200
    recovery = enrolled.recovery_codes[0]

    refused: list[tuple[dict[str, str], int, str]] = [
        ({}, 400, "invalid_request"),
        ({"current_password": PASSWORD}, 400, "invalid_request"),
        ({"code": recovery}, 400, "invalid_request"),
        ({"current_password": OTHER_PASSWORD, "code": recovery}, 401, "invalid_credentials"),
        ({"current_password": PASSWORD, "code": "000000"}, 401, "invalid_code"),
        ({"current_password": PASSWORD, "code": "aaaaa-aaaaa"}, 401, "invalid_code"),
        ({"current_password": PASSWORD, "code": seen}, 401, "invalid_code"),  # a replay
        ({"current_password": PASSWORD, "code": bob.recovery_codes[0]}, 401, "invalid_code"),
    ]
    for body, status, code in refused:
        assert_problem(
            client.delete(f"/mfa/{enrolled.factor_id}", json=body, headers=stolen), status, code
        )
        assert_problem(client.post("/mfa/recovery-codes", json=body, headers=stolen), status, code)

    listed = client.get("/mfa", headers=stolen).get_json()
    assert [factor["id"] for factor in listed["factors"]] == [enrolled.factor_id]
    assert listed["recovery_codes_left"] == 10  # the code sent with a wrong password is unspent
    # The old set still works (it was not replaced), and the factor still guards the login.
    assert _second_step(client, mfa_token(client), recovery).status_code == 200
    assert_problem(
        client.post("/login", json={"username": "alice", "password": PASSWORD}), 403, "mfa_required"
    )
    assert _recovery_codes_left(app, "bob") == 10


# --- 8-9: secrets at rest and in the logs ----------------------------------------------------


def _rows(app, table) -> list[Any]:
    with app.app_context():
        rows = list(db.session.execute(select(table.__table__)))
        db.session.rollback()
    return rows


def _forms_of_recovery_code(code: str) -> list[str]:
    compact = code.replace("-", "")
    forms = [code, code.upper(), compact, compact.upper(), f"{compact[:5]} {compact[5:]}"]
    # Nor an unkeyed hash (50 bits are within a brute force of a bare SHA-256).
    for form in (code, compact):
        forms += [
            hashlib.sha256(form.encode()).hexdigest(),
            hashlib.sha1(form.encode()).hexdigest(),  # noqa: S324 (what must not be there)
        ]
    return forms


def test_the_database_holds_no_totp_secret_and_no_recovery_code(app, clock):
    client = app.test_client()
    enrolled = enrol_totp(client, signup(client)["access_token"], clock)
    raw = base64.b32decode(enrolled.secret)
    secret_forms = [
        enrolled.secret,
        enrolled.secret.lower(),
        raw.hex(),
        base64.b64encode(raw).decode(),
    ]
    for row in _rows(app, Factor):
        dump = repr(tuple(row))
        assert not any(form in dump for form in secret_forms)
        blob = bytes(row.secret_encrypted)
        assert raw not in blob
        assert not any(form.encode() in blob for form in secret_forms)
    codes = _rows(app, RecoveryCode)
    assert len(codes) == 10
    dump = "\n".join(repr(tuple(row)) for row in codes)
    for code in enrolled.recovery_codes:
        for form in _forms_of_recovery_code(code):
            assert form not in dump, form


def test_a_sealed_secret_copied_to_another_factor_does_not_open(app, clock):
    client = app.test_client()
    alice = enrol_totp(client, signup(client)["access_token"], clock)
    bob_access = signup(client, "bob")["access_token"]
    bob = enrol_totp(client, bob_access, clock)
    with app.app_context():
        sealed = db.session.scalar(
            select(Factor.secret_encrypted).where(Factor.id == uuid.UUID(alice.factor_id))
        )
        db.session.execute(
            update(Factor)
            .where(Factor.id == uuid.UUID(bob.factor_id))
            .values(secret_encrypted=sealed)
        )
        db.session.commit()
    clock.advance()
    alices_code = clock.code(alice.secret)
    # Bob's factor now holds Alice's sealed secret: it does not open under Bob's factor id, so
    # neither Alice's code nor Bob's own works for Bob (and nothing answers 500).
    assert_problem(_second_step(client, mfa_token(client, "bob"), alices_code), 401, "invalid_code")
    assert_problem(
        _second_step(client, mfa_token(client, "bob"), clock.code(bob.secret)), 401, "invalid_code"
    )
    assert client.get("/mfa", headers=bearer(bob_access)).status_code == 200
    # The code itself was good: Alice logs in with it.
    assert _second_step(client, mfa_token(client), alices_code).status_code == 200
    # Bob's recovery codes still get him in.
    assert _second_step(client, mfa_token(client, "bob"), bob.recovery_codes[0]).status_code == 200


class _Records(logging.Handler):
    """Every record of the authsvc loggers, formatted as authsvc writes them."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.formatter_ = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", "")
        self.lines.append(f"{self.formatter_.format(record)} {record.getMessage()} {fields}")


def test_no_totp_secret_code_recovery_code_or_mfa_token_reaches_the_logs(app, clock, capfd, caplog):
    caplog.set_level("DEBUG")
    records = _Records()
    logger = logging.getLogger("authsvc")
    logger.addHandler(records)
    try:
        client = app.test_client()
        access = signup(client)["access_token"]
        headers = bearer(access)
        started = client.post("/mfa/totp", json={"current_password": PASSWORD}, headers=headers)
        enrolment = started.get_json()
        confirm_code = clock.code(enrolment["secret"])
        confirmed = client.post(
            f"/mfa/totp/{enrolment['id']}/confirm", json={"code": confirm_code}, headers=headers
        )
        recovery = confirmed.get_json()["recovery_codes"]
        clock.advance()
        login_code = clock.code(enrolment["secret"])
        wrong_code = "739184" if login_code != "739184" else "739185"
        tokens = [mfa_token(client) for _ in range(3)]
        assert_problem(_second_step(client, tokens[0], wrong_code), 401, "invalid_code")
        assert _second_step(client, tokens[0], login_code).status_code == 200
        assert _second_step(client, tokens[1], recovery[0]).status_code == 200
        assert_problem(_second_step(client, tokens[2], recovery[0]), 401, "invalid_code")
        clock.advance()
        regenerated = client.post(
            "/mfa/recovery-codes",
            json={"current_password": PASSWORD, "code": clock.code(enrolment["secret"])},
            headers=headers,
        )
        new_codes = regenerated.get_json()["recovery_codes"]
        removed = client.delete(
            f"/mfa/{enrolment['id']}",
            json={"current_password": PASSWORD, "code": new_codes[0]},
            headers=headers,
        )
        assert removed.status_code == 204
    finally:
        logger.removeHandler(records)
    stderr = [line for line in capfd.readouterr().err.splitlines() if '"logger": "authsvc' in line]
    ours = [r for r in caplog.records if r.name.startswith("authsvc")]
    logged = "\n".join(
        [*records.lines, *stderr, *(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in ours)]
    )
    # The outcomes are logged (so this looked at real log lines)...
    for event in ("mfa_enabled", "login_mfa_required", "recovery_code_used", "mfa_disabled"):
        assert event in logged, event
    # ...never a secret, a code or an mfa_token.
    secret = enrolment["secret"]
    forbidden = [secret, secret.lower(), enrolment["otpauth_uri"]]
    forbidden += [confirm_code, login_code, wrong_code]
    forbidden += [*tokens, PASSWORD]
    for code in [*recovery, *new_codes]:
        forbidden += [code, code.replace("-", ""), code.upper()]
    for value in forbidden:
        assert value not in logged, value


# --- 10: the mfa_token is not a bearer token, nor an access token an mfa_token ---------------


def test_the_mfa_token_is_no_bearer_token_and_no_other_token_is_an_mfa_token(app, clock):
    client = app.test_client()
    tokens = signup(client)
    enrolled = enrol_totp(client, tokens["access_token"], clock)
    token = mfa_token(client)
    assert_invalid_token(client.get("/me", headers=bearer(token)))
    assert_invalid_token(client.get("/mfa", headers=bearer(token)))
    refresh = client.post("/refresh", headers=bearer(token))
    assert refresh.status_code == 401, refresh.get_json()
    clock.advance()
    code = clock.code(enrolled.secret)
    # Nor is any other token an mfa_token: the access and refresh tokens, a WebAuthn
    # challenge (as long as an mfa_token, kept in the same table).
    challenge = client.post("/webauthn/login/options").get_json()["challenge"]
    assert len(challenge) == len(token)
    for other in (tokens["access_token"], tokens["refresh_token"], challenge):
        refused = _second_step(client, other, code)
        assert_problem(refused, 401, "invalid_token")
        assert "WWW-Authenticate" not in refused.headers
    # The mfa_token itself was not spent by any of this.
    assert _second_step(client, token, code).status_code == 200


# --- 11: a passkey's assertion moved between the two ceremonies -------------------------------


def _passkey_user(client) -> SoftAuthenticator:
    access = signup(client)["access_token"]
    options = client.post(
        "/webauthn/register/options", json={"current_password": PASSWORD}, headers=bearer(access)
    ).get_json()
    authenticator = SoftAuthenticator()
    registered = client.post(
        "/webauthn/register", json=authenticator.create(options), headers=bearer(access)
    )
    assert registered.status_code == 201, registered.get_json()
    return authenticator


def _mfa_assertion(client, authenticator: SoftAuthenticator) -> tuple[str, dict[str, Any]]:
    token = mfa_token(client)
    options = client.post("/webauthn/mfa/options", json={"mfa_token": token})
    assert options.status_code == 200, options.get_json()
    return token, authenticator.get(options.get_json())


def _passwordless_assertion(client, authenticator: SoftAuthenticator) -> dict[str, Any]:
    return authenticator.get(client.post("/webauthn/login/options").get_json())


def _with_passkey(client, token: str, credential: dict[str, Any]):
    return client.post("/login/mfa", json={"mfa_token": token, "credential": credential})


def test_a_second_step_assertion_does_not_log_in_passwordless_and_back(app):
    client = app.test_client()
    authenticator = _passkey_user(client)

    # A second step's assertion at the passwordless login: refused (its challenge is of the
    # other kind), and still good where it belongs...
    token, second = _mfa_assertion(client, authenticator)
    assert_problem(client.post("/webauthn/login", json=second), 401, "invalid_credentials")
    done = _with_passkey(client, token, second)
    assert done.status_code == 200, done.get_json()
    # ...and once used there, not at the passwordless login either.
    assert_problem(client.post("/webauthn/login", json=second), 401, "invalid_credentials")

    # A passwordless assertion as a second step: refused, the mfa_token not spent, and the
    # assertion still good at the passwordless login...
    passwordless = _passwordless_assertion(client, authenticator)
    token = mfa_token(client)
    assert_problem(_with_passkey(client, token, passwordless), 401, "invalid_code")
    alone = client.post("/webauthn/login", json=passwordless)
    assert alone.status_code == 200, alone.get_json()
    # ...and once used there, not as a second step.
    assert_problem(_with_passkey(client, mfa_token(client), passwordless), 401, "invalid_code")
    # The refused attempts made no session: the signup's (raised to aal2 by its first
    # passkey), one second step, one passwordless.
    assert _sessions(app) == {"aal2": 3}


# --- a password login in flight while the first factor is confirmed ---------------------------


def test_a_password_login_in_flight_while_a_first_factor_is_confirmed_gets_no_live_session(
    app, clock, monkeypatch
):
    """Confirming a first factor revokes the other aal1 sessions; one whose password check was
    under way then (it read "no factor" before the confirmation) must not come out live, or a
    stolen password keeps a password-only session on an account with MFA."""
    client = app.test_client()
    access = signup(client)["access_token"]
    hasher = app.extensions["authsvc"].hasher
    verify = hasher.verify_and_update
    checking, confirmed = threading.Event(), threading.Event()
    raced: dict[str, Any] = {}

    def slow_verify(password: str, stored_hash: str):
        result = verify(password, stored_hash)
        if threading.current_thread().name == "login":
            checking.set()  # the login read the user (no factor yet) and checked the password
            assert confirmed.wait(timeout=10)
        return result

    monkeypatch.setattr(hasher, "verify_and_update", slow_verify)

    def log_in() -> None:
        body = {"username": "alice", "password": PASSWORD}
        raced["response"] = app.test_client().post("/login", json=body)

    thread = threading.Thread(target=log_in, name="login")
    thread.start()
    assert checking.wait(timeout=10)
    enrol_totp(client, access, clock)  # the first factor: other aal1 sessions are revoked
    confirmed.set()
    thread.join(timeout=30)

    response = raced["response"]
    if response.status_code == 200:
        # Answered with tokens: the session behind them must be dead already.
        stolen = bearer(response.get_json()["access_token"])
        assert_invalid_token(client.get("/me", headers=stolen), "token_revoked")
        refreshed = client.post("/refresh", headers=bearer(response.get_json()["refresh_token"]))
        assert refreshed.status_code == 401, refreshed.get_json()
    else:
        assert response.status_code in {401, 403}, response.get_json()
    # In the database: no live password-only session; the one that enrolled is aal2 now.
    with app.app_context():
        live = db.session.scalars(select(Session.aal).where(Session.revoked_at.is_(None))).all()
    assert live == ["aal2"], live
