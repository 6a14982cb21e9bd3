"""Where a rendered message goes: an SMTP server (``smtplib``), or the console (development).

A backend raises ``TransientMailError`` for what a later attempt may fix (a 4xx reply, a
connection refused, reset or timed out) and ``PermanentMailError`` for a 5xx reply. Their
messages carry the reply code and the server's short reason, never the message.
"""

from __future__ import annotations

import smtplib
import ssl
import sys
from email.message import EmailMessage
from typing import Protocol, TextIO

from ..config_email import SmtpServer

_MAX_REASON = 200


class MailError(Exception):
    """A message could not be handed over; the text is safe to log and store."""


class TransientMailError(MailError):
    pass


class PermanentMailError(MailError):
    pass


class MailBackend(Protocol):
    def send(self, message: EmailMessage) -> None: ...


def _reason(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {' '.join(text.split())}"[:_MAX_REASON]


def _classified(code: int, reply: bytes | str) -> MailError:
    reason = _reason(code, reply)
    return PermanentMailError(reason) if 500 <= code < 600 else TransientMailError(reason)


class SmtpBackend:
    """One connection per message: mail here is rare (a signup, a reset), and a connection
    kept open would only time out between them."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    def _connect(self) -> smtplib.SMTP:
        server = self.server
        # Certificate and host name always verified: against AUTHSVC_SMTP_CA_FILE, else the
        # system's CAs.
        context = ssl.create_default_context(cafile=server.ca_file)
        if server.tls == "implicit":
            return smtplib.SMTP_SSL(
                server.host, server.port, timeout=server.timeout, context=context
            )
        connection = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
        if server.tls == "starttls":
            connection.starttls(context=context)
        return connection

    def send(self, message: EmailMessage) -> None:
        try:
            with self._connect() as connection:
                if self.server.username is not None:
                    connection.login(self.server.username, self.server.password or "")
                refused = connection.send_message(message)
        except smtplib.SMTPRecipientsRefused as error:
            code, reply = next(iter(error.recipients.values()))
            raise _classified(code, reply) from None
        except smtplib.SMTPResponseException as error:
            raise _classified(error.smtp_code, error.smtp_error) from None
        except smtplib.SMTPNotSupportedError:
            raise PermanentMailError(
                "the server lacks an extension this message needs (STARTTLS, AUTH or SMTPUTF8)"
            ) from None
        except (smtplib.SMTPException, OSError) as error:
            # Disconnected, refused, reset, timed out, TLS failures: the next attempt may work.
            raise TransientMailError(f"connection: {type(error).__name__}") from None
        if refused:
            code, reply = next(iter(refused.values()))
            raise _classified(code, reply)


class ConsoleBackend:
    """Development only (refused in production by the configuration): prints whole messages,
    links and tokens included, so `make run` needs no mail server."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(self, message: EmailMessage) -> None:
        stream = self._stream or sys.stderr
        text = message.get_body(("plain",))
        body = text.get_content() if text is not None else ""
        stream.write(
            f"\n----- mail (console backend, development only) -----\n"
            f"From: {message['From']}\nTo: {message['To']}\nSubject: {message['Subject']}\n\n"
            f"{body}\n----- end of mail -----\n"
        )
        stream.flush()
