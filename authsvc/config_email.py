"""The e-mail settings (DESIGN §9): verification mode, links, token lifetimes, and the mail
server. Read by ``authsvc.config.load_settings`` with the rest, validated at start."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from .config_reader import ConfigError, Reader, url

EMAIL_VERIFICATION_MODES = ("off", "optional", "required")
MAIL_BACKENDS = ("smtp", "console", "none")
OUTBOX_SENDERS = ("thread", "external")


@dataclass(frozen=True)
class SmtpServer:
    """Where mail goes: ``AUTHSVC_SMTP_URL`` taken apart."""

    host: str
    port: int
    tls: str  # "starttls", "implicit" (smtps://) or "none"
    username: str | None
    password: str | None = field(repr=False)
    timeout: float
    # A CA bundle to verify the server's certificate with, instead of the system's (a private
    # CA); verification itself is never turned off.
    ca_file: str | None = None


@dataclass(frozen=True)
class EmailSettings:
    """DESIGN §9: verification, reset and change by e-mail, and the mail that carries them."""

    verification: str  # off, optional, required
    link_url: str  # with {token} (and {action}) placeholders
    verification_ttl: int
    change_ttl: int
    reset_ttl: int
    cooldown: int  # seconds between two mails of one purpose to one address (0: none)
    backend: str  # smtp, console (development only) or none (queued until an SMTP URL is set)
    smtp: SmtpServer | None
    mail_from: str
    templates: str | None
    sender: str  # thread: each service process sends; external: `flask outbox run` does
    ratelimit_address: str  # each e-mail endpoint, per client address


_SMTP_DEFAULT_PORTS = {"starttls": 587, "implicit": 465, "none": 25}


def smtp_server(value: str, timeout: float, ca_file: str | None = None) -> SmtpServer:
    """``smtp://user:pass@host:587`` (STARTTLS unless ``?starttls=false``), ``smtps://...``
    (implicit TLS). User and password are percent-decoded."""
    name = "AUTHSVC_SMTP_URL"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{name} is not a valid URL") from None
    if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
        raise ConfigError(f"{name} must be an smtp:// or smtps:// URL with a host")
    options = {key: values[-1].lower() for key, values in parse_qs(parts.query).items()}
    unknown = sorted(set(options) - {"starttls"})
    if unknown:
        raise ConfigError(f"{name}: unknown option(s) {', '.join(unknown)} (only starttls)")
    if parts.scheme == "smtps":
        if "starttls" in options:
            raise ConfigError(f"{name}: smtps:// is implicit TLS; starttls does not apply")
        tls = "implicit"
    else:
        starttls = options.get("starttls", "true")
        if starttls not in {"true", "false"}:
            raise ConfigError(f"{name}: starttls must be true or false")
        tls = "starttls" if starttls == "true" else "none"
    return SmtpServer(
        host=parts.hostname,
        port=port or _SMTP_DEFAULT_PORTS[tls],
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        timeout=timeout,
        ca_file=ca_file,
    )


def _link_url(read: Reader, issuer: str) -> str:
    name = "AUTHSVC_EMAIL_LINK_URL"
    value = read.raw(name)
    if value is None:
        return f"{issuer}/email-action?action={{action}}&token={{token}}"
    if "{token}" not in value:
        raise ConfigError(f"{name} must contain the {{token}} placeholder")
    bare = value.replace("{token}", "t").replace("{action}", "a")
    parts = urlsplit(bare)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")
    try:
        value.format(token="t", action="a")  # noqa: S106 (placeholders, not a secret)
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"{name} may use only the {{token}} and {{action}} placeholders"
        ) from None
    return value


def email_settings(read: Reader, development: bool, issuer: str) -> EmailSettings:
    verification = read.choice("AUTHSVC_EMAIL_VERIFICATION", "optional", EMAIL_VERIFICATION_MODES)
    timeout = float(read.integer("AUTHSVC_SMTP_TIMEOUT", 10, minimum=1, maximum=120))
    smtp_url = read.raw("AUTHSVC_SMTP_URL")
    ca_file = read.raw("AUTHSVC_SMTP_CA_FILE")
    if ca_file is not None and not Path(ca_file).is_file():
        raise ConfigError(f"AUTHSVC_SMTP_CA_FILE must be a file, got {ca_file!r}")
    smtp = smtp_server(smtp_url, timeout, ca_file) if smtp_url else None
    default_backend = "smtp" if smtp else "console" if development else "none"
    backend = read.choice("AUTHSVC_MAIL_BACKEND", default_backend, MAIL_BACKENDS)
    if backend == "console" and not development:
        # The console backend prints whole messages, links and tokens included.
        raise ConfigError("AUTHSVC_MAIL_BACKEND=console is for development only")
    if backend == "smtp" and smtp is None:
        raise ConfigError("AUTHSVC_MAIL_BACKEND=smtp needs AUTHSVC_SMTP_URL")
    remote = smtp is not None and smtp.host not in {"localhost", "127.0.0.1", "::1"}
    if remote and smtp.password and smtp.tls == "none" and not development:  # type: ignore[union-attr]
        # The password would cross the network in clear text.
        raise ConfigError(
            "AUTHSVC_SMTP_URL sends a password without TLS (starttls=false) to a remote "
            "host: use STARTTLS or smtps://"
        )
    if backend == "none" and verification == "required":
        raise ConfigError(
            "AUTHSVC_EMAIL_VERIFICATION=required needs a mail server: set AUTHSVC_SMTP_URL"
        )
    templates = read.raw("AUTHSVC_MAIL_TEMPLATES")
    if templates is not None and not Path(templates).is_dir():
        raise ConfigError(f"AUTHSVC_MAIL_TEMPLATES must be a directory, got {templates!r}")
    mail_from = read.string("AUTHSVC_MAIL_FROM", f"no-reply@{urlsplit(issuer).hostname}")
    if "@" not in mail_from or any(ch in mail_from for ch in "\r\n"):
        raise ConfigError("AUTHSVC_MAIL_FROM must be an address, e.g. 'Acme <auth@acme.test>'")
    return EmailSettings(
        verification=verification,
        link_url=_link_url(read, url("AUTHSVC_ISSUER", issuer)),
        verification_ttl=read.integer("AUTHSVC_EMAIL_VERIFICATION_TTL", 86_400, minimum=60),
        change_ttl=read.integer("AUTHSVC_EMAIL_CHANGE_TTL", 86_400, minimum=60),
        reset_ttl=read.integer("AUTHSVC_PASSWORD_RESET_TTL", 1_800, minimum=60, maximum=86_400),
        cooldown=read.integer("AUTHSVC_EMAIL_COOLDOWN", 60, maximum=86_400),
        backend=backend,
        smtp=smtp,
        mail_from=mail_from,
        templates=templates,
        sender=read.choice("AUTHSVC_OUTBOX_SENDER", "thread", OUTBOX_SENDERS),
        ratelimit_address=read.rate_limit("AUTHSVC_RATELIMIT_EMAIL_ADDRESS", "10/minute"),
    )
