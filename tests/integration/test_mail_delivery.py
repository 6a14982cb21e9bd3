"""Mail delivery end to end (DESIGN §9, delivery): the outbox, its sender and a real SMTP server
on loopback (tests.support.smtp, aiosmtpd), stopped, restarted and made to refuse.

1. The mail server down while a reset is asked for: the request answers 202 at once; once the
   server is back the message arrives, exactly once, and its link works (gunicorn, both
   backends).
2. A 4xx reply is tried again until the server takes the message, which it then gets once; a
   5xx reply marks the message failed, it is not tried again, and `flask outbox retry` queues
   it again (in-process app, both backends).
3. Two gunicorn replicas of two workers each on one PostgreSQL and Redis, one mail server:
   every one of many messages queued on both arrives exactly once (PostgreSQL only).
4. The service's log after a whole mail flow holds no token from a mail, no mail text and no
   password (gunicorn, both backends).

Every wait is bounded; after the last expected message each test watches a little longer
(``SETTLE``) so that a duplicate sent late would be seen.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from flask import Flask
from sqlalchemy import text

from authsvc.extensions import db
from tests.support.helpers import PASSWORD
from tests.support.servers import Service, service_on
from tests.support.settings import AppFactory
from tests.support.smtp import MailServer, text_of, token_in

NEW_PASSWORD = "a brand new and unusual passphrase"
CLIENT_TIMEOUT = 15.0
# A request that only queues a message answers in well under this, mail server or not.
PROMPT = 2.0
# The sender tries again after 1, 2, 4 ... s (30 s at most): a message retried a few times
# arrives well within this once the server takes it.
DELIVERY = 45.0
# How long we keep watching after the expected messages arrived: longer than a sender's poll
# (1 s) plus the first backoffs, so a second send of any of them would be seen.
SETTLE = 4.0
RESET_SUBJECT = "Reset your password"
LINK = re.compile(r"https?://\S+[?&]token=[A-Za-z0-9_-]{43}")


# -- helpers -------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it is truthy (its value), failing after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.05)


def with_subject(server: MailServer, subject: str, to: str | None = None) -> list[EmailMessage]:
    return [message for message in server.messages(to) if message["Subject"] == subject]


def wait_for_subject(
    server: MailServer, subject: str, count: int, to: str | None = None, timeout: float = DELIVERY
) -> list[EmailMessage]:
    return wait_until(
        lambda: (found := with_subject(server, subject, to)) and len(found) >= count and found,
        timeout,
        f"{count} message(s) {subject!r} to {to or 'anyone'}",
    )


def link_in(message: EmailMessage) -> str:
    found = LINK.search(text_of(message))
    assert found is not None, text_of(message)
    return found.group(0)


def post(service: Service, path: str, **kwargs: Any) -> requests.Response:
    return requests.post(service.url(path), timeout=CLIENT_TIMEOUT, **kwargs)


def signup_with_email(service: Service, username: str, email: str) -> dict[str, Any]:
    body = {"username": username, "password": PASSWORD, "email": email}
    response = post(service, "/signup", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def events(service: Service, event: str) -> list[dict[str, Any]]:
    """The JSON lines of the service's log for ``event``."""
    found = []
    for line in service.logs().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # gunicorn's own lines
        if isinstance(entry, dict) and entry.get("event") == event:
            found.append(entry)
    return found


def log_in(service: Service, username: str, password: str) -> requests.Response:
    return post(service, "/login", json={"username": username, "password": password})


def outbox_rows(app: Flask, recipient: str) -> list[Any]:
    """The outbox's messages as the database holds them (read, not mocked); not the
    ``request:*`` rows, a stranger's requests for a mail that the sender resolves first."""
    with app.app_context():
        rows = db.session.execute(
            text(
                "SELECT id, template, status, attempts, last_error, sent_at FROM outbox"
                " WHERE recipient = :recipient AND template NOT LIKE 'request:%'"
                " ORDER BY created_at"
            ),
            {"recipient": recipient},
        ).all()
        db.session.remove()
    return rows


def outbox_cli(app: Flask, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=["outbox", *args])
    assert result.exit_code == 0, result.output
    return result.output


def listed(app: Flask, message_id: Any, *args: str) -> list[str] | None:
    """The words of the message's line in `flask outbox list`, or None if it is not listed."""
    wanted = str(uuid.UUID(str(message_id)))  # SQLite keeps the id as 32 hex digits
    for line in outbox_cli(app, "list", *args).splitlines():
        if line.startswith(wanted):
            return line.split()
    return None


# -- 1. the mail server down while a reset is asked for (gunicorn) ------------------------------


@pytest.mark.slow
def test_a_reset_asked_for_while_the_mail_server_is_down_arrives_once_it_is_back(
    start_service: Callable[..., Any], mail_server: MailServer
):
    address = "alice@example.com"
    settings = {"AUTHSVC_SMTP_URL": mail_server.url, "AUTHSVC_RATELIMIT_ENABLED": "false"}
    with start_service(**settings) as service:
        signup_with_email(service, "alice", address)
        # The verification mail arrives: the sender works before the server goes away.
        mail_server.wait_for(1, to=address, timeout=DELIVERY)
        mail_server.stop()

        started = time.monotonic()
        response = post(service, "/password/forgot", json={"email": address})
        assert response.status_code == 202, response.text
        assert time.monotonic() - started < PROMPT
        # The sender tried, was refused a connection, and will try again.
        wait_until(
            lambda: any(e["template"] == "reset_password" for e in events(service, "mail_retry")),
            10,
            "a mail_retry of the reset message in the log",
        )
        assert with_subject(mail_server, RESET_SUBJECT) == []

        mail_server.start()
        (message,) = wait_for_subject(mail_server, RESET_SUBJECT, 1, to=address)
        time.sleep(SETTLE)
        assert len(with_subject(mail_server, RESET_SUBJECT)) == 1, "sent more than once"
        assert len(mail_server.messages(address)) == 2  # the verification and the reset

        # The link opens the service's page, which spends nothing...
        link = link_in(message)
        assert link.startswith(service.url("/email-action?action=reset&token="))
        page = requests.get(link, timeout=CLIENT_TIMEOUT)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        # ...and its token sets a new password, once.
        token = token_in(message)
        reset = {"token": token, "new_password": NEW_PASSWORD}
        assert post(service, "/password/reset", json=reset).status_code == 204
        assert log_in(service, "alice", NEW_PASSWORD).status_code == 200
        assert log_in(service, "alice", PASSWORD).status_code == 401
        again = post(service, "/password/reset", json={**reset, "new_password": PASSWORD})
        assert again.status_code == 400 and again.json()["code"] == "invalid_token"


# -- 2. 4xx retried, 5xx failed (in-process app and sender thread) ------------------------------


@pytest.fixture
def quiet_mail_app(make_app: AppFactory, mail_server: MailServer) -> Flask:
    """Mail through ``mail_server``; no verification mail at signup, so a reset is the only
    message."""
    return make_app(AUTHSVC_SMTP_URL=mail_server.url, AUTHSVC_EMAIL_VERIFICATION="off")


def sign_up_and_forget(app: Flask, address: str) -> None:
    client = app.test_client()
    body = {"username": "alice", "password": PASSWORD, "email": address}
    assert client.post("/signup", json=body).status_code == 201
    assert client.post("/password/forgot", json={"email": address}).status_code == 202


def test_a_4xx_reply_is_tried_again_until_the_server_takes_the_message_once(
    quiet_mail_app: Flask, mail_server: MailServer
):
    address = "alice@example.com"
    mail_server.reply = "451 4.3.0 try later"
    sign_up_and_forget(quiet_mail_app, address)
    wait_until(lambda: mail_server.refused >= 2, 10, "the message to be refused twice")
    assert mail_server.messages() == []
    (row,) = outbox_rows(quiet_mail_app, address)
    assert row.status == "queued" and row.last_error.startswith("451")

    mail_server.reply = None
    (message,) = mail_server.wait_for(1, to=address, timeout=DELIVERY)
    time.sleep(SETTLE)
    assert len(mail_server.messages()) == 1, "sent more than once"
    (row,) = outbox_rows(quiet_mail_app, address)
    assert row.status == "sent" and row.sent_at is not None and row.last_error is None
    assert row.attempts == mail_server.refused + 1
    line = listed(quiet_mail_app, row.id)
    assert line is not None and line[1:5] == [
        "sent",
        f"attempts={row.attempts}",
        "reset_password",
        address,
    ]

    client = quiet_mail_app.test_client()
    reset = {"token": token_in(message), "new_password": NEW_PASSWORD}
    assert client.post("/password/reset", json=reset).status_code == 204


def test_a_5xx_reply_marks_the_message_failed_and_it_is_not_tried_again(
    quiet_mail_app: Flask, mail_server: MailServer, capsys: pytest.CaptureFixture[str]
):
    address = "alice@example.com"
    mail_server.reply = "550 5.1.1 no such user"
    sign_up_and_forget(quiet_mail_app, address)
    wait_until(
        lambda: [row.status for row in outbox_rows(quiet_mail_app, address)] == ["failed"],
        10,
        "the message to be marked failed",
    )
    # Accepted from now on: a retry would be delivered, and none comes.
    mail_server.reply = None
    time.sleep(SETTLE)
    assert mail_server.refused == 1 and mail_server.messages() == []
    (row,) = outbox_rows(quiet_mail_app, address)
    assert (row.status, row.attempts, row.sent_at) == ("failed", 1, None)
    assert row.last_error.startswith("550")
    line = listed(quiet_mail_app, row.id, "--status", "failed")
    assert line is not None and line[1:3] == ["failed", "attempts=1"]
    assert listed(quiet_mail_app, row.id, "--status", "queued") is None
    logged = capsys.readouterr().err
    assert '"event": "mail_failed"' in logged and '"reason": "rejected"' in logged

    # The operator's remedy: queued again, it is sent once, and its link still works.
    assert "queued 1 messages again" in outbox_cli(quiet_mail_app, "retry", "--all-failed")
    (message,) = mail_server.wait_for(1, to=address, timeout=DELIVERY)
    time.sleep(SETTLE)
    assert len(mail_server.messages()) == 1
    client = quiet_mail_app.test_client()
    reset = {"token": token_in(message), "new_password": NEW_PASSWORD}
    assert client.post("/password/reset", json=reset).status_code == 204


# -- 3. two replicas, one outbox (PostgreSQL) ---------------------------------------------------

USERS = 30


def every_message_once(
    server: MailServer, subject: str, addresses: list[str]
) -> dict[str, EmailMessage]:
    """Each address got exactly one message with ``subject``: by recipient, by Message-ID and
    by token (a message sent twice is rendered twice, with a new Message-ID but the same
    link)."""
    wait_for_subject(server, subject, len(addresses), timeout=DELIVERY)
    time.sleep(SETTLE)
    messages = with_subject(server, subject)
    recipients = Counter(str(message["To"]) for message in messages)
    assert recipients == Counter(addresses), {a: n for a, n in recipients.items() if n != 1}
    ids = Counter(message["Message-ID"] for message in messages)
    assert len(ids) == len(addresses), [i for i, n in ids.items() if n > 1]
    if subject == RESET_SUBJECT:
        tokens = Counter(token_in(message) for message in messages)
        assert len(tokens) == len(addresses), "one token mailed twice"
    return {str(message["To"]): message for message in messages}


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", [pytest.param("postgres", marks=pytest.mark.services)], indirect=True
)
@pytest.mark.parametrize("smtp", ["up", "down-then-up"])
def test_two_replicas_deliver_every_message_exactly_once(
    database_config: dict[str, str], mail_server: MailServer, tmp_path: Path, smtp: str
):
    settings = {
        "AUTHSVC_ISSUER": "https://auth.replicas.test",
        "AUTHSVC_SMTP_URL": mail_server.url,
        "AUTHSVC_RATELIMIT_ENABLED": "false",
        "AUTHSVC_EMAIL_VERIFICATION": "off",
    }
    with ExitStack() as stack:
        # One after the other: the second starts on a database the first has set up.
        replicas = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            replica = service_on(
                "postgres",
                tmp_path / name,
                database_url=database_config["DATABASE_URL"],
                redis_url=database_config["REDIS_URL"],
                **settings,
            )
            replicas.append(stack.enter_context(replica))
        users = [(f"user{n:02d}", f"user{n:02d}@example.com") for n in range(USERS)]
        addresses = [address for _, address in users]

        def on(n: int) -> Service:
            return replicas[n % len(replicas)]

        with ThreadPoolExecutor(max_workers=8) as pool:
            for created in pool.map(lambda n: signup_with_email(on(n), *users[n]), range(USERS)):
                assert created["user"]["email"] in addresses
            if smtp == "down-then-up":
                # Everything queued while the server is down is due again at about the same
                # time, and every sender of both replicas goes after it at once.
                mail_server.stop()
            forgot = pool.map(
                lambda n: post(on(n + 1), "/password/forgot", json={"email": addresses[n]}),
                range(USERS),
            )
            assert [response.status_code for response in forgot] == [202] * USERS
            if smtp == "down-then-up":
                wait_until(
                    lambda: all(len(events(r, "mail_retry")) >= 2 for r in replicas),
                    10,
                    "both replicas to have tried and failed",
                )
                mail_server.start()

            resets = every_message_once(mail_server, RESET_SUBJECT, addresses)

            # Every token is its user's, and live: each resets that user's password (on
            # either replica), which queues a notice, delivered once each as well.
            def reset(n: int) -> tuple[int, int]:
                body = {"token": token_in(resets[addresses[n]]), "new_password": NEW_PASSWORD}
                done = post(on(n), "/password/reset", json=body).status_code
                return done, log_in(on(n + 1), users[n][0], NEW_PASSWORD).status_code

            assert list(pool.map(reset, range(USERS))) == [(204, 200)] * USERS
        every_message_once(mail_server, "Your password was changed", addresses)

        with psycopg.connect(database_config["DATABASE_URL"]) as connection:
            rows = connection.execute("SELECT template, status, attempts FROM outbox").fetchall()
        assert Counter((template, status) for template, status, _ in rows) == {
            ("request:reset_password", "done"): USERS,  # each resolved once, into one mail
            ("reset_password", "sent"): USERS,
            ("password_changed", "sent"): USERS,
        }
        if smtp == "up":
            assert {attempts for _, _, attempts in rows} == {1}  # never claimed twice
        for replica in replicas:
            assert events(replica, "mail_sent"), "a replica sent nothing"


# -- 4. what the log keeps of a whole mail flow (gunicorn) --------------------------------------


@pytest.mark.slow
def test_the_log_of_a_whole_mail_flow_holds_no_token_text_or_password(
    start_service: Callable[..., Any], mail_server: MailServer
):
    old, new = "alice@example.com", "alice.new@example.org"
    settings = {"AUTHSVC_SMTP_URL": mail_server.url, "AUTHSVC_RATELIMIT_ENABLED": "false"}
    with start_service(**settings) as service:
        signed_up = signup_with_email(service, "alice", old)
        (verification,) = mail_server.wait_for(1, to=old, timeout=DELIVERY)
        assert post(service, "/email/verify", json={"token": token_in(verification)}).ok

        assert post(service, "/password/forgot", json={"email": old}).status_code == 202
        (reset_mail,) = wait_for_subject(mail_server, RESET_SUBJECT, 1, to=old)
        reset = {"token": token_in(reset_mail), "new_password": NEW_PASSWORD}
        assert post(service, "/password/reset", json=reset).status_code == 204

        logged_in = log_in(service, "alice", NEW_PASSWORD)
        assert logged_in.status_code == 200
        tokens = logged_in.json()
        change = {"email": new, "current_password": NEW_PASSWORD}
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert post(service, "/email/change", json=change, headers=headers).status_code == 202
        (change_mail,) = mail_server.wait_for(1, to=new, timeout=DELIVERY)
        verified = post(service, "/email/verify", json={"token": token_in(change_mail)})
        assert verified.status_code == 200 and verified.json()["email"] == new

        # verification, reset, password changed, change link, and the old address's notice
        messages = mail_server.wait_for(5, timeout=DELIVERY)
        wait_until(
            lambda: len(events(service, "mail_sent")) >= 5,
            10,
            "the sender's five mail_sent lines",
        )
        time.sleep(0.5)  # the lines the last requests wrote
        logs = service.logs()

    secrets = {
        "a password": [PASSWORD, NEW_PASSWORD],
        "a mailed token": [token_in(m) for m in (verification, reset_mail, change_mail)],
        "a mailed link": [link_in(m) for m in (verification, reset_mail, change_mail)],
        "an issued token": [
            signed_up["access_token"],
            signed_up["refresh_token"],
            tokens["access_token"],
            tokens["refresh_token"],
        ],
        "a line of a mail": [
            line.strip()
            for message in messages
            for line in text_of(message).splitlines()
            if len(line.strip()) >= 20
        ],
        "a subject": [str(message["Subject"]) for message in messages],
    }
    found = {kind: [s for s in values if s in logs] for kind, values in secrets.items()}
    assert all(len(values) > 0 for values in secrets.values())
    assert not any(found.values()), found
