"""Attacks on the e-mail flows (DESIGN §9): address enumeration by body, headers and time,
parallel use of one link, guessing and mail bombing, and secrets leaking into logs or the
database."""

from __future__ import annotations

import random
import statistics
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from authsvc.extensions import db
from authsvc.models import OneTimeToken, OutboxMessage
from tests.support.helpers import OTHER_PASSWORD, PASSWORD, assert_problem, bearer
from tests.support.smtp import text_of, token_in

NEW_PASSWORD = "a brand new and unusual passphrase"
# Headers that differ on every response whatever it says.
_VARYING = {"X-Request-Id", "Date"}


def _signup(client, username="alice", email="alice@example.com"):
    response = client.post(
        "/signup", json={"username": username, "password": PASSWORD, "email": email}
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _shape(response):
    headers = {k: v for k, v in response.headers.items() if k not in _VARYING}
    return response.status_code, response.get_data(), headers


@pytest.mark.parametrize("path", ["/password/forgot", "/email/verification"])
def test_known_and_unknown_addresses_answer_alike(mail_client, mail_server, path):
    _signup(mail_client)
    mail_server.wait_for(1)
    known = mail_client.post(path, json={"email": "alice@example.com"})
    unknown = mail_client.post(path, json={"email": "nobody@example.com"})
    assert known.status_code == 202
    assert _shape(known) == _shape(unknown)


@pytest.mark.slow
def test_known_and_unknown_addresses_take_the_same_time(make_app, mail_server):
    """The request itself costs the same for any address. Each request is timed alone: the
    sender's work after a known address (a token, a mail) is let finish before the next one,
    in a shuffled order, so it is charged to neither case."""
    app = make_app(AUTHSVC_SMTP_URL=mail_server.url)  # the sender thread runs, as by default
    client = app.test_client()
    _signup(client)
    cases = {"known": "alice@example.com", "unknown": "nobody@example.com"}
    timings: dict[str, list[float]] = {name: [] for name in cases}
    order = [name for name in cases for _ in range(40)]
    random.Random(14).shuffle(order)
    for name in order:
        started = time.perf_counter()
        response = client.post("/password/forgot", json={"email": cases[name]})
        timings[name].append(time.perf_counter() - started)
        assert response.status_code == 202
        _outbox_drained(app)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    # A skipped write would make the unknown address several times faster.
    assert max(medians.values()) / min(medians.values()) < 1.5, medians
    # And by construction: each request wrote the same one row, a request the sender resolves
    # later; only the known address's turned into a mail.
    mail_server.wait_for(41, timeout=30)  # the signup's, then the 40 resets
    with app.app_context():
        templates = db.session.scalars(select(OutboxMessage.template)).all()
    assert templates.count("request:reset_password") == 80
    assert templates.count("reset_password") == 40


def _outbox_drained(app, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with app.app_context():
        while time.monotonic() < deadline:
            queued = db.session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.status == "queued")
            )
            db.session.rollback()
            if queued == 0:
                return
            time.sleep(0.005)
    raise AssertionError("the outbox did not drain")


def _in_parallel(count, attempt):
    barrier = threading.Barrier(count)
    answers: list[int] = []
    lock = threading.Lock()

    def run():
        barrier.wait(timeout=10)
        status = attempt()
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == count
    return answers


def test_one_reset_link_used_16_times_at_once_succeeds_once(mail_app, mail_client, mail_server):
    _signup(mail_client)
    mail_client.post("/password/forgot", json={"email": "alice@example.com"})
    token = token_in(mail_server.wait_for(2)[1])
    passwords = iter([f"{NEW_PASSWORD} number {i}" for i in range(16)])
    lock = threading.Lock()

    def attempt():
        with lock:
            password = next(passwords)
        body = {"token": token, "new_password": password}
        return mail_app.test_client().post("/password/reset", json=body).status_code

    answers = _in_parallel(16, attempt)
    assert sorted(answers) == [204] + [400] * 15


def test_one_verification_link_used_16_times_at_once_succeeds_once(
    mail_app, mail_client, mail_server
):
    _signup(mail_client)
    token = token_in(mail_server.wait_for(1)[0])
    answers = _in_parallel(
        16,
        lambda: mail_app.test_client().post("/email/verify", json={"token": token}).status_code,
    )
    assert sorted(answers) == [200] + [400] * 15


def test_a_mail_cooldown_refuses_alike_for_known_and_unknown_addresses(make_app, mail_server):
    # With throttling off: the cooldown is its own (one victim, one mail a minute at most).
    client = make_app(
        AUTHSVC_SMTP_URL=mail_server.url,
        AUTHSVC_RATELIMIT_ENABLED="false",
        AUTHSVC_EMAIL_COOLDOWN="60",
    ).test_client()
    _signup(client)
    mail_server.wait_for(1)
    # The signup's own mail does not start the cooldown (a 429 right after a signup would tell
    # that the address just signed up); the first resend does.
    for address in ("alice@example.com", "nobody@example.com"):
        assert client.post("/email/verification", json={"email": address}).status_code == 202
        resend = client.post("/email/verification", json={"email": address})
        assert_problem(resend, 429, "rate_limited")
    answers = {}
    for address in ("alice@example.com", "nobody@example.com"):
        assert client.post("/password/forgot", json={"email": address}).status_code == 202
        answers[address] = client.post("/password/forgot", json={"email": address})
        assert_problem(answers[address], 429, "rate_limited")
        assert 1 <= int(answers[address].headers["Retry-After"]) <= 60
    known, unknown = answers.values()
    assert known.get_json() == unknown.get_json()
    # One reset mail went out (the sender resolves the request in the background), not two.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(
        m["Subject"] == "Reset your password" for m in mail_server.messages()
    ):
        time.sleep(0.05)
    time.sleep(1)  # long enough for a second one to show
    assert [m["Subject"] for m in mail_server.messages()].count("Reset your password") == 1


def test_each_mail_endpoint_is_throttled_per_client_address(make_app, mail_server):
    client = make_app(
        AUTHSVC_SMTP_URL=mail_server.url,
        AUTHSVC_RATELIMIT_ENABLED="true",
        AUTHSVC_RATELIMIT_EMAIL_ADDRESS="3/minute",
    ).test_client()
    for path, body in [
        ("/password/forgot", lambda i: {"email": f"u{i}@example.com"}),
        ("/email/verify", lambda i: {"token": "A" * 43}),
        ("/password/reset", lambda i: {"token": "A" * 43, "new_password": NEW_PASSWORD}),
    ]:
        statuses = [client.post(path, json=body(i)).status_code for i in range(4)]
        assert statuses[3] == 429, (path, statuses)
        # Another client address has its own budget.
        other = client.post(path, json=body(9), environ_base={"REMOTE_ADDR": "192.0.2.7"})
        assert other.status_code != 429


def test_guessing_the_password_at_email_change_is_throttled_per_user(make_app, mail_server):
    client = make_app(
        AUTHSVC_SMTP_URL=mail_server.url,
        AUTHSVC_RATELIMIT_ENABLED="true",
        AUTHSVC_RATELIMIT_LOGIN_USERNAME="3/minute",
    ).test_client()
    access = _signup(client)["access_token"]

    def change(password, address):
        return client.post(
            "/email/change",
            json={"email": "new@example.com", "current_password": password},
            headers=bearer(access),
            environ_base={"REMOTE_ADDR": address},
        )

    for i in range(3):
        assert_problem(change(OTHER_PASSWORD, f"192.0.2.{i}"), 401, "invalid_credentials")
    # Throttled even with the right password, from yet another address.
    assert_problem(change(PASSWORD, "192.0.2.99"), 429, "rate_limited")


def test_no_token_body_or_password_reaches_the_logs(mail_client, mail_server, capfd, caplog):
    caplog.set_level("DEBUG")
    tokens = _signup(mail_client)
    verify = token_in(mail_server.wait_for(1)[0])
    mail_client.post("/email/verify", json={"token": verify})
    mail_client.post("/password/forgot", json={"email": "alice@example.com"})
    reset_mail = mail_server.wait_for(2)[1]
    reset = token_in(reset_mail)
    mail_client.post("/password/reset", json={"token": reset, "new_password": NEW_PASSWORD})
    access = mail_client.post(
        "/login", json={"username": "alice", "password": NEW_PASSWORD}
    ).get_json()["access_token"]
    mail_client.post(
        "/email/change",
        json={"email": "alice@new.example", "current_password": NEW_PASSWORD},
        headers=bearer(access),
    )
    change_token = token_in(mail_server.wait_for(1, to="alice@new.example")[0])
    mail_server.wait_for(3, to="alice@example.com")  # the "password changed" notice too
    # What authsvc logged (the test's own SMTP server logs whole messages at DEBUG).
    ours = [record for record in caplog.records if record.name.startswith("authsvc")]
    stderr = [line for line in capfd.readouterr().err.splitlines() if '"logger": "authsvc' in line]
    logged = "\n".join(stderr) + "\n".join(
        f"{record.getMessage()} {getattr(record, 'fields', '')}" for record in ours
    )
    assert "mail_sent" in logged  # the outcomes are logged...
    for secret in (verify, reset, change_token, PASSWORD, NEW_PASSWORD, tokens["access_token"]):
        assert secret not in logged  # ...never a token or a password
    for line in text_of(reset_mail).splitlines():
        if len(line) > 20:
            assert line not in logged  # nor the message


def test_the_database_holds_no_usable_token(make_app, mail_server):
    app = make_app(AUTHSVC_SMTP_URL=mail_server.url, AUTHSVC_OUTBOX_SENDER="external")
    client = app.test_client()
    _signup(client)
    with app.app_context():
        queued = [
            repr(tuple(row))
            for table in (OneTimeToken, OutboxMessage)
            for row in db.session.execute(select(table.__table__))
        ]
        db.session.rollback()  # end the read: the sender writes on its own connections
        assert app.extensions["authsvc"].outbox.run_once().sent == 1
        payloads = db.session.scalars(select(OutboxMessage.payload_encrypted)).all()
    token = token_in(mail_server.wait_for(1)[0])
    dump = "\n".join(queued)
    assert token not in dump
    assert "please confirm" not in dump.lower()
    assert payloads == [None]  # erased once sent


def test_two_senders_on_a_slow_relay_send_each_message_once(make_app, mail_server):
    """Each claim covers one send: a relay slower than a whole batch's share of the lease
    never lets a second sender take a message the first is still sending."""
    config = {"AUTHSVC_SMTP_URL": mail_server.url, "AUTHSVC_OUTBOX_SENDER": "external"}
    first, second = make_app(**config), make_app(**config)
    client = first.test_client()
    for i in range(6):
        _signup(client, username=f"user{i}", email=f"user{i}@example.com")
    mail_server.delay = 0.4
    senders = [app.extensions["authsvc"].outbox for app in (first, second)]
    for sender in senders:
        sender.lease = timedelta(seconds=1.5)  # shorter than six sends, longer than one

    def run(app, sender):
        with app.app_context():
            sender.run_once()

    threads = [
        threading.Thread(target=run, args=pair)
        for pair in zip((first, second), senders, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    received = sorted(m["To"] for m in mail_server.messages())
    assert received == [f"user{i}@example.com" for i in range(6)]


def test_a_broken_template_fails_its_message_and_stalls_nothing(make_app, mail_server, tmp_path):
    (tmp_path / "verify_email.txt").write_text("Hello {{ no_such_variable }}\n")
    app = make_app(
        AUTHSVC_SMTP_URL=mail_server.url,
        AUTHSVC_OUTBOX_SENDER="external",
        AUTHSVC_MAIL_TEMPLATES=str(tmp_path),
    )
    client = app.test_client()
    _signup(client)  # a verification mail: broken
    client.post("/password/forgot", json={"email": "alice@example.com"})  # a reset mail: fine
    with app.app_context():
        report = app.extensions["authsvc"].outbox.run_once()
        statuses = dict(
            db.session.execute(select(OutboxMessage.template, OutboxMessage.status)).all()
        )
    assert (report.sent, report.failed) == (1, 1)
    assert statuses == {
        "verify_email": "failed",
        "request:reset_password": "done",
        "reset_password": "sent",
    }
    assert [m["Subject"] for m in mail_server.messages()] == ["Reset your password"]
