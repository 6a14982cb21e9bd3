"""authsvc.mail and its settings: the SMTP URL, the backends against a real SMTP server on
loopback (replies 2xx, 4xx, 5xx, a stopped server, STARTTLS refused, AUTH), the templates and
their overrides, the sealing of queued mail, the retry schedule."""

from __future__ import annotations

import io
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from authsvc.config import ConfigError, load_settings
from authsvc.config_email import smtp_server
from authsvc.mail.backends import (
    ConsoleBackend,
    MailError,
    PermanentMailError,
    SmtpBackend,
    TransientMailError,
)
from authsvc.mail.sender import MAX_BACKOFF_SECONDS, backoff
from authsvc.mail.templates import TEMPLATES, MailRenderer
from authsvc.security.one_time import TOKEN_LENGTH, MailSecrets
from tests.support.servers import free_port
from tests.support.settings import ISSUER, TEST_SECRET
from tests.support.smtp import MailServer, _Recorder

PRODUCTION = {"AUTHSVC_SECRET_KEY": TEST_SECRET, "AUTHSVC_ISSUER": ISSUER}


def email_settings(tmp_path: Path, **overrides: str):
    return load_settings(str(tmp_path), {**PRODUCTION, **overrides}, environ={}).email


def refused(tmp_path: Path, variable: str, **overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        email_settings(tmp_path, **overrides)
    assert variable in str(info.value), str(info.value)
    return str(info.value)


# -- settings -------------------------------------------------------------------------------------


def test_email_defaults(tmp_path):
    settings = email_settings(tmp_path)
    assert settings.verification == "optional"
    assert settings.link_url == f"{ISSUER}/email-action?action={{action}}&token={{token}}"
    assert (settings.verification_ttl, settings.change_ttl, settings.reset_ttl) == (
        86_400,
        86_400,
        1_800,
    )
    assert settings.cooldown == 60
    # Production without a mail server: mail waits in the outbox (never the console).
    assert settings.backend == "none" and settings.smtp is None
    assert settings.mail_from == "no-reply@auth.test"
    development = load_settings(str(tmp_path), {"AUTHSVC_ENV": "development"}, environ={}).email
    assert development.backend == "console"


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "user", "password"),
    [
        ("smtp://mail.example.com", "mail.example.com", 587, "starttls", None, None),
        (
            "smtp://u:p%40ss@mail.example.com:2525",
            "mail.example.com",
            2525,
            "starttls",
            "u",
            "p@ss",
        ),
        ("smtp://mail.example.com?starttls=false", "mail.example.com", 25, "none", None, None),
        ("smtps://u:pw@mail.example.com", "mail.example.com", 465, "implicit", "u", "pw"),
    ],
)
def test_smtp_urls(url, host, port, tls, user, password):
    server = smtp_server(url, 10.0)
    assert (server.host, server.port, server.tls, server.username, server.password) == (
        host,
        port,
        tls,
        user,
        password,
    )
    assert "pw" not in repr(server) and "p@ss" not in repr(server)


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example.com",
        "smtp://",
        "smtp://mail.example.com?starttls=maybe",
        "smtp://mail.example.com?tls=true",
        "smtps://mail.example.com?starttls=true",
        "smtp://mail.example.com:99999",
    ],
)
def test_bad_smtp_urls_stop_the_start(tmp_path, url):
    refused(tmp_path, "AUTHSVC_SMTP_URL", AUTHSVC_SMTP_URL=url)


def test_a_password_in_clear_text_to_a_remote_server_is_refused(tmp_path):
    refused(
        tmp_path, "AUTHSVC_SMTP_URL", AUTHSVC_SMTP_URL="smtp://u:pw@mail.example?starttls=false"
    )
    # Loopback (a local relay) is fine, and so is any server over TLS.
    email_settings(tmp_path, AUTHSVC_SMTP_URL="smtp://u:pw@127.0.0.1:25?starttls=false")
    email_settings(tmp_path, AUTHSVC_SMTP_URL="smtp://u:pw@mail.example")


def test_internationalised_domains_are_mailed_in_idna():
    from authsvc.security.emails import deliverable

    assert deliverable("alice@bücher.example") == "alice@xn--bcher-kva.example"
    assert deliverable("Alice@Example.com") == "Alice@example.com"


def test_the_console_backend_is_refused_in_production(tmp_path):
    message = refused(tmp_path, "AUTHSVC_MAIL_BACKEND", AUTHSVC_MAIL_BACKEND="console")
    assert "development" in message


def test_required_verification_needs_a_mail_server(tmp_path):
    refused(tmp_path, "AUTHSVC_EMAIL_VERIFICATION", AUTHSVC_EMAIL_VERIFICATION="required")
    settings = email_settings(
        tmp_path, AUTHSVC_EMAIL_VERIFICATION="required", AUTHSVC_SMTP_URL="smtp://m.example"
    )
    assert settings.verification == "required" and settings.backend == "smtp"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHSVC_EMAIL_VERIFICATION", "sometimes"),
        ("AUTHSVC_EMAIL_LINK_URL", "https://app.example/verify"),  # no {token}
        ("AUTHSVC_EMAIL_LINK_URL", "javascript:{token}"),
        ("AUTHSVC_EMAIL_LINK_URL", "https://app.example/?t={token}&u={user}"),
        ("AUTHSVC_PASSWORD_RESET_TTL", "10"),
        ("AUTHSVC_EMAIL_COOLDOWN", "-1"),
        ("AUTHSVC_MAIL_FROM", "nobody"),
        ("AUTHSVC_MAIL_TEMPLATES", "/no/such/folder"),
        ("AUTHSVC_OUTBOX_SENDER", "cron"),
        ("AUTHSVC_RATELIMIT_EMAIL_ADDRESS", "often"),
    ],
)
def test_bad_email_settings_stop_the_start(tmp_path, variable, value):
    refused(tmp_path, variable, **{variable: value})


def test_an_apps_own_link_page(tmp_path):
    settings = email_settings(
        tmp_path, AUTHSVC_EMAIL_LINK_URL="https://app.example/account/{action}#token={token}"
    )
    assert settings.link_url.format(action="reset", token="T") == (
        "https://app.example/account/reset#token=T"
    )


# -- backends against a real SMTP server ----------------------------------------------------------


def message_to(address: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "auth@example.com"
    message["To"] = address
    message["Subject"] = "hello"
    message.set_content("the body")
    return message


def plain_backend(server: MailServer) -> SmtpBackend:
    return SmtpBackend(smtp_server(server.url, 5.0))


def test_smtp_delivers(mail_server):
    plain_backend(mail_server).send(message_to("bob@example.com"))
    (received,) = mail_server.wait_for(1, to="bob@example.com")
    assert received["Subject"] == "hello"


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("451 4.3.0 try again later", TransientMailError),
        ("421 4.7.0 too busy", TransientMailError),
        ("550 5.1.1 no such mailbox", PermanentMailError),
        ("554 5.7.1 rejected", PermanentMailError),
    ],
)
def test_smtp_replies_are_classified(mail_server, reply, error):
    mail_server.reply = reply
    with pytest.raises(error) as info:
        plain_backend(mail_server).send(message_to("bob@example.com"))
    assert str(info.value).startswith(reply.split()[0])
    assert "the body" not in str(info.value)


def test_a_stopped_server_is_a_transient_error():
    server = MailServer()  # never started: connection refused
    with pytest.raises(TransientMailError):
        plain_backend(server).send(message_to("bob@example.com"))


def test_starttls_is_required_by_default(mail_server):
    """smtp:// without ?starttls=false never falls back to cleartext."""
    backend = SmtpBackend(smtp_server(f"smtp://127.0.0.1:{mail_server.port}", 5.0))
    with pytest.raises(PermanentMailError):
        backend.send(message_to("bob@example.com"))
    assert mail_server.messages() == []


def test_smtp_authentication():
    seen: list[tuple[bytes, bytes]] = []

    def authenticator(_server, _session, _envelope, mechanism, data):
        seen.append((data.login, data.password))
        return AuthResult(success=data.login == b"mailer" and data.password == b"s3cret")

    recorder = MailServer()
    port = free_port()
    controller = Controller(
        _Recorder(recorder),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        good = SmtpBackend(smtp_server(f"smtp://mailer:s3cret@127.0.0.1:{port}?starttls=false", 5))
        good.send(message_to("bob@example.com"))
        assert len(recorder.wait_for(1)) == 1
        bad = SmtpBackend(smtp_server(f"smtp://mailer:wrong@127.0.0.1:{port}?starttls=false", 5))
        # Refused (535; aiosmtpd then drops the connection when smtplib tries LOGIN next).
        with pytest.raises(MailError) as info:
            bad.send(message_to("bob@example.com"))
        assert "wrong" not in str(info.value)
        assert len(recorder.messages()) == 1
        assert (b"mailer", b"s3cret") in seen
    finally:
        controller.stop()


def test_the_console_backend_prints_the_message():
    stream = io.StringIO()
    ConsoleBackend(stream).send(message_to("bob@example.com"))
    assert "To: bob@example.com" in stream.getvalue()
    assert "the body" in stream.getvalue()


# -- templates ------------------------------------------------------------------------------------


def context():
    return {
        "username": "alice",
        "email": "alice@example.com",
        "new_email": "alice@new.example",
        "link": "https://auth.test/email-action?action=verify&token=T",
        "expires_in": "24 hours",
        "issuer": "https://auth.test",
        "how": "changed",
        "change": "An authenticator app was added to",
        "left": "9",
    }


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_renders_text_and_html(template):
    message = MailRenderer("Acme <auth@acme.test>", None).render(
        template, "alice@example.com", context()
    )
    assert message["From"] == "Acme <auth@acme.test>"
    assert message["To"] == "alice@example.com"
    assert message["Subject"] and "\n" not in message["Subject"]
    assert message["Message-ID"].endswith("@acme.test>")
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "alice" in text and "alice" in html
    if template in {"verify_email", "reset_password", "change_email"}:
        assert context()["link"] in text
        assert 'href="https://auth.test/email-action?action=verify&amp;token=T"' in html
    if template == "mfa_changed":
        assert "An authenticator app was added to your account" in text
    if template == "recovery_code_used":
        assert "9 unused" in text and "9 unused" in html


def test_an_outbox_message_keeps_its_message_id_on_every_attempt():
    renderer = MailRenderer("Acme <auth@acme.test>", None)
    row = uuid.uuid4()
    first, retry = (renderer.render("verify_email", "a@b.test", context(), row) for _ in range(2))
    assert first["Message-ID"] == retry["Message-ID"] == f"<{row}@acme.test>"


def test_html_escapes_values():
    values = {**context(), "username": "<script>x</script>"}
    message = MailRenderer("a@b.test", None).render("verify_email", "a@b.test", values)
    html = message.get_body(("html",)).get_content()
    assert "<script>x" not in html and "&lt;script&gt;" in html


def test_templates_can_be_overridden_one_file_at_a_time(tmp_path):
    (tmp_path / "reset_password.subject.txt").write_text("Acme: new password for {{ username }}")
    message = MailRenderer("a@b.test", str(tmp_path)).render(
        "reset_password", "a@b.test", context()
    )
    assert message["Subject"] == "Acme: new password for alice"
    # The parts not overridden are the built-in ones.
    assert context()["link"] in message.get_body(("plain",)).get_content()


def test_unknown_templates_are_refused():
    with pytest.raises(ValueError):
        MailRenderer("a@b.test", None).render("../../etc/passwd", "a@b.test", context())


# -- secrets and retries --------------------------------------------------------------------------


def test_tokens_are_random_and_only_their_digest_is_kept():
    secrets = MailSecrets(TEST_SECRET)
    token, digest = secrets.new_token()
    assert len(token) == TOKEN_LENGTH and secrets.well_formed(token)
    assert token not in digest and len(digest) == 64
    assert secrets.digest(token) == digest
    assert MailSecrets(TEST_SECRET + "x").digest(token) != digest  # keyed by the secret
    assert len({secrets.new_token()[0] for _ in range(100)}) == 100


def test_a_sealed_context_opens_only_in_its_own_row_under_the_same_secret():
    secrets = MailSecrets(TEST_SECRET)
    row = uuid.uuid4()
    blob = secrets.seal({"link": "https://x/?token=T"}, row)
    assert b"token=T" not in blob
    assert secrets.open(blob, row) == {"link": "https://x/?token=T"}
    assert secrets.open(blob, uuid.uuid4()) is None
    assert MailSecrets(TEST_SECRET + "x").open(blob, row) is None


def test_the_retry_schedule_doubles_up_to_30_seconds():
    delays = [backoff(attempt).total_seconds() for attempt in range(1, 9)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert max(delays) == MAX_BACKOFF_SECONDS


# -- TLS: STARTTLS and implicit TLS, against a certificate of a CA of the test's own ---------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, as files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test mail server")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def _tls_server(tls_files: tuple[str, str], *, implicit: bool) -> tuple[MailServer, Controller]:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    recorder = MailServer()

    def authenticator(_server, _session, _envelope, _mechanism, data):
        return AuthResult(success=(data.login, data.password) == (b"mailer", b"s3cret"))

    options = {"ssl_context": context} if implicit else {"tls_context": context}
    controller = Controller(
        _Recorder(recorder),
        hostname="127.0.0.1",
        port=recorder.port,
        authenticator=authenticator,
        require_starttls=not implicit,
        # aiosmtpd does not count a connection wrapped from the start (ssl_context) as TLS for
        # its AUTH rule; it is TLS all the same.
        auth_require_tls=not implicit,
        **options,
    )
    controller.start()
    return recorder, controller


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "smtps"])
def test_tls_with_authentication(tls_files, implicit):
    recorder, controller = _tls_server(tls_files, implicit=implicit)
    try:
        scheme = "smtps" if implicit else "smtp"
        url = f"{scheme}://mailer:s3cret@127.0.0.1:{recorder.port}"
        SmtpBackend(smtp_server(url, 5.0, ca_file=tls_files[0])).send(message_to("b@example.com"))
        assert len(recorder.wait_for(1)) == 1
        # Without the CA the certificate does not verify: nothing is sent (and never in clear).
        with pytest.raises(TransientMailError) as info:
            SmtpBackend(smtp_server(url, 5.0)).send(message_to("b@example.com"))
        assert "SSLCertVerificationError" in str(info.value)
        assert len(recorder.messages()) == 1
    finally:
        controller.stop()


def test_the_ca_file_must_exist(tmp_path):
    refused(tmp_path, "AUTHSVC_SMTP_CA_FILE", AUTHSVC_SMTP_CA_FILE=str(tmp_path / "missing.pem"))
