"""flask mail test, flask outbox list|retry|run, users create --email, and prune of one-time
tokens and outbox messages, against a real SMTP server on loopback."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from authsvc.extensions import db
from authsvc.models import OneTimeToken, OutboxMessage, utcnow
from tests.support.helpers import PASSWORD, login
from tests.support.smtp import text_of, token_in


def _signup(client, username="alice", email="alice@example.com"):
    body = {"username": username, "password": PASSWORD, "email": email}
    response = client.post("/signup", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def count(app, model):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_mail_test_sends_a_message(mail_app, mail_server):
    result = mail_app.test_cli_runner().invoke(args=["mail", "test", "ops@example.com"])
    assert result.exit_code == 0, result.output
    (message,) = mail_server.wait_for(1, to="ops@example.com")
    assert message["Subject"] == "authsvc test message"
    assert "Mail works" in text_of(message)


def test_mail_test_reports_the_refusal(mail_app, mail_server):
    mail_server.reply = "550 5.7.1 relaying denied"
    result = mail_app.test_cli_runner().invoke(args=["mail", "test", "ops@example.com"])
    assert result.exit_code != 0
    assert "550 5.7.1 relaying denied" in result.output


def test_mail_test_without_a_mail_server(runner):
    result = runner.invoke(args=["mail", "test", "ops@example.com"])
    assert result.exit_code != 0
    assert "AUTHSVC_SMTP_URL" in result.output


def test_outbox_list_and_retry_after_a_5xx(make_app, mail_server):
    app = make_app(AUTHSVC_SMTP_URL=mail_server.url, AUTHSVC_OUTBOX_SENDER="external")
    client, runner = app.test_client(), app.test_cli_runner()
    _signup(client)
    listed = runner.invoke(args=["outbox", "list"])
    assert "queued" in listed.output and "verify_email" in listed.output
    assert "alice@example.com" in listed.output and "token" not in listed.output.lower()

    mail_server.reply = "554 5.7.1 rejected"
    assert "failed 1" in runner.invoke(args=["outbox", "run", "--once"]).output
    failed = runner.invoke(args=["outbox", "list", "--status", "failed"]).output
    assert "554 5.7.1 rejected" in failed
    assert runner.invoke(args=["outbox", "list", "--status", "queued"]).output == ""
    # Not retried on its own.
    assert "sent 0, retrying 0, failed 0" in runner.invoke(args=["outbox", "run", "--once"]).output

    mail_server.reply = None
    assert (
        "queued 1 messages again" in runner.invoke(args=["outbox", "retry", "--all-failed"]).output
    )
    assert "sent 1" in runner.invoke(args=["outbox", "run", "--once"]).output
    token = token_in(mail_server.wait_for(1)[0])
    assert client.post("/email/verify", json={"token": token}).status_code == 200
    assert runner.invoke(args=["outbox", "retry"]).exit_code != 0  # ids or --all-failed


def test_a_4xx_is_retried_and_sent_once(make_app, mail_server):
    app = make_app(AUTHSVC_SMTP_URL=mail_server.url, AUTHSVC_OUTBOX_SENDER="external")
    runner = app.test_cli_runner()
    _signup(app.test_client())
    mail_server.reply = "451 4.3.0 try again later"
    assert "retrying 1" in runner.invoke(args=["outbox", "run", "--once"]).output
    listed = runner.invoke(args=["outbox", "list"]).output
    assert "queued" in listed and "451 4.3.0" in listed
    mail_server.reply = None
    with app.app_context():  # due at once instead of after the backoff
        db.session.execute(update(OutboxMessage).values(next_attempt_at=utcnow()))
        db.session.commit()
    assert "sent 1" in runner.invoke(args=["outbox", "run", "--once"]).output
    assert "sent 0" in runner.invoke(args=["outbox", "run", "--once"]).output
    assert len(mail_server.messages()) == 1


def test_an_expired_message_is_not_sent(make_app, mail_server):
    app = make_app(AUTHSVC_SMTP_URL=mail_server.url, AUTHSVC_OUTBOX_SENDER="external")
    _signup(app.test_client())
    with app.app_context():
        db.session.execute(update(OutboxMessage).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    output = app.test_cli_runner().invoke(args=["outbox", "run", "--once"]).output
    assert "failed 1" in output
    with app.app_context():
        assert db.session.scalars(select(OutboxMessage.payload_encrypted)).all() == [None]
    assert mail_server.messages() == []


def test_users_create_with_an_email_counts_as_verified(make_app, mail_server):
    app = make_app(AUTHSVC_SMTP_URL=mail_server.url, AUTHSVC_EMAIL_VERIFICATION="required")
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["users", "create", "root", "--email", "Root@Example.com", "--password-stdin"],
        input=f"{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    user = login(app.test_client(), username="root")["user"]
    assert user["email"] == "Root@example.com" and user["email_verified"] is True
    assert "email=Root@example.com" in runner.invoke(args=["users", "list"]).output
    taken = runner.invoke(
        args=["users", "create", "other", "--email", "root@example.com", "--password-stdin"],
        input=f"{PASSWORD}\n",
    )
    assert taken.exit_code != 0 and "another account" in taken.output


def test_prune_deletes_dead_tokens_and_finished_messages(make_app, mail_server):
    app = make_app(AUTHSVC_SMTP_URL=mail_server.url, AUTHSVC_OUTBOX_SENDER="external")
    client, runner = app.test_client(), app.test_cli_runner()
    _signup(client)
    _signup(client, username="bob", email="bob@example.com")
    runner.invoke(args=["outbox", "run", "--once"])
    with app.app_context():
        old = utcnow() - timedelta(days=8)
        db.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.recipient == "alice@example.com")
            .values(created_at=old)
        )
        db.session.execute(
            update(OneTimeToken)
            .where(OneTimeToken.email == "alice@example.com")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
    result = runner.invoke(args=["prune"])
    assert "1 one-time tokens, 1 finished messages" in result.output, result.output
    assert count(app, OneTimeToken) == 1 and count(app, OutboxMessage) == 1
