"""A real SMTP server on loopback for the mail tests (aiosmtpd), recording what it receives.

It can be stopped and started again on the same port (to prove the outbox retries), and told
to answer every message with a given reply (``"451 4.3.0 try later"``, ``"550 5.1.1 no such
user"``) instead of accepting it.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.servers import free_port

LINK = re.compile(r"https?://\S+?[?&]token=([A-Za-z0-9_-]{43})")


class _Recorder:
    def __init__(self, server: MailServer) -> None:
        self.server = server

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        if self.server.delay:
            await asyncio.sleep(self.server.delay)  # a slow relay
        reply = self.server.reply
        if reply is not None:
            self.server.refused += 1
            return reply
        message = message_from_bytes(envelope.content, policy=policy.default)
        with self.server.lock:
            self.server.received.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 OK"


class MailServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[tuple[list[str], EmailMessage]] = []
        self.reply: str | None = None
        self.delay = 0.0
        self.refused = 0
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?starttls=false"

    def start(self) -> MailServer:
        self._controller = Controller(_Recorder(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self, to: str | None = None) -> list[EmailMessage]:
        with self.lock:
            return [
                m for rcpt, m in self.received if to is None or to.lower() in map(str.lower, rcpt)
            ]

    def wait_for(
        self, count: int = 1, *, to: str | None = None, timeout: float = 10.0
    ) -> list[EmailMessage]:
        """At least ``count`` messages (to ``to``), waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(to)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(
            f"expected {count} message(s) to {to or 'anyone'}, got {len(self.messages(to))}"
        )


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None, "the message has no text part"
    return part.get_content()


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None, "the message has no HTML part"
    return part.get_content()


def token_in(message: EmailMessage) -> str:
    """The one-time token in the message's link (text part)."""
    found = LINK.search(text_of(message))
    assert found is not None, f"no link with a token in: {text_of(message)!r}"
    return found.group(1)
