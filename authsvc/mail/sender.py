"""The outbox: messages are queued in the transaction that makes them (``queue_message``) and
sent afterwards by ``OutboxSender`` (DESIGN §9, delivery).

Each service process runs one sender thread, started with its first request and woken by
every commit that queued a message (``AUTHSVC_OUTBOX_SENDER=external`` leaves sending to
``flask outbox run``). A sender claims due rows (``store.outbox.claim``), renders each one and
hands it to the backend:

- accepted: marked sent, its context (the link, the token) erased;
- a 4xx reply or a network error: tried again after 1, 2, 4 ... 30 s, until the link expires;
- a 5xx reply: marked failed (``flask outbox retry`` queues it again).

Every outcome is logged with the message id, template and attempt: never a recipient's
message, link or token.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask

from ..config_email import EmailSettings
from ..models import utcnow
from ..observability import MAIL_FAILED, MAIL_RETRIED, MAIL_SENT, OUTBOX_OLDEST_QUEUED
from ..security.one_time import MailSecrets
from ..store import outbox as outbox_store
from .backends import MailBackend, PermanentMailError, TransientMailError
from .templates import MailRenderer

log = logging.getLogger("authsvc.mail")

POLL_SECONDS = 1.0
# Messages one round sends at most (each claimed on its own, just before it is sent).
BATCH = 20
MAX_BACKOFF_SECONDS = 30


def queue_message(
    secrets: MailSecrets,
    recipient: str,
    template: str,
    context: dict[str, Any],
    expires_at: datetime,
) -> uuid.UUID:
    """Queue a message in the caller's transaction; it is sent once that commits."""
    message_id = uuid.uuid4()
    outbox_store.add(
        message_id, recipient, template, secrets.seal(context, message_id), utcnow(), expires_at
    )
    return message_id


@dataclass
class SendReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    resolved: int = 0  # requests looked up (and, where an account applied, turned into mail)


# A stranger's request for a mail ("request:<purpose>"), resolved by the service that queued it:
# (message id, claim id, template, context).
RequestHandler = Callable[[uuid.UUID, uuid.UUID, str, dict[str, Any]], None]
REQUEST_PREFIX = "request:"


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(MAX_BACKOFF_SECONDS, 2 ** max(attempts - 1, 0)))


class OutboxSender:
    """One app's sender (``Runtime.outbox``)."""

    def __init__(
        self,
        settings: EmailSettings,
        secrets: MailSecrets,
        renderer: MailRenderer,
        backend: MailBackend | None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.renderer = renderer
        self.backend = backend
        self.request_handler: RequestHandler | None = None
        # A claim, taken just before its one send, outlives the slowest send (connect, EHLO,
        # STARTTLS, AUTH, MAIL, RCPT, DATA, QUIT: each may wait up to the timeout), so no other
        # sender takes a message still being sent.
        timeout = settings.smtp.timeout if settings.smtp else 0
        self.lease = timedelta(seconds=max(60.0, 12 * timeout))
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._owner_pid: int | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def runs_in_process(self) -> bool:
        return self.backend is not None and self.settings.sender == "thread"

    def wake(self) -> None:
        self._wake.set()

    def wait(self, seconds: float) -> None:
        """Until woken or ``seconds`` pass (``flask outbox run``'s pause between rounds)."""
        self._wake.wait(seconds)
        self._wake.clear()

    def started_here(self) -> bool:
        """Whether this process needs no start (running already, or nothing to run)."""
        return self._owner_pid == os.getpid() or not self.runs_in_process

    def ensure_started(self, app: Flask) -> None:
        """This process's sender thread (a forked worker starts its own)."""
        if self._owner_pid == os.getpid() or not self.runs_in_process:
            return
        with self._lock:
            if self._owner_pid == os.getpid():
                return
            self._owner_pid = os.getpid()
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._loop, args=(app,), name="authsvc-outbox", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and self._owner_pid == os.getpid():
            thread.join(timeout=self.settings.smtp.timeout + 5 if self.settings.smtp else 5)
        self._owner_pid = None

    def _loop(self, app: Flask) -> None:
        stop = self._stop
        while not stop.is_set():
            self._wake.clear()
            try:
                with app.app_context():
                    self.run_once()
            except Exception as error:  # the database is down, say: try again next round
                log.warning("outbox sender: %s", type(error).__name__)
            self._wake.wait(POLL_SECONDS)

    def run_once(self, limit: int = BATCH) -> SendReport:
        """Send what is due now (needs an app context): one claim, then each message."""
        report = SendReport()
        if self.backend is None:
            return report
        now = utcnow()
        oldest = outbox_store.oldest_queued()
        OUTBOX_OLDEST_QUEUED.set((now - oldest).total_seconds() if oldest else 0)
        if oldest is None or not outbox_store.any_due(now):
            return report
        for _ in range(limit):
            claim_id = uuid.uuid4()
            now = utcnow()
            row = outbox_store.claim(now, now + self.lease, claim_id)
            if row is None:
                break
            try:
                self._deliver(row, claim_id, report)
            except Exception as error:  # a broken template, say: never a stalled queue
                outbox_store.mark_failed(row.id, claim_id, "internal error", erase=False)
                self._outcome(
                    "mail_failed",
                    {"message_id": str(row.id), "template": row.template},
                    reason="internal_error",
                    exception=type(error).__name__,
                )
                report.failed += 1
        return report

    def _deliver(self, row: Any, claim_id: uuid.UUID, report: SendReport) -> None:
        fields = {"message_id": str(row.id), "template": row.template, "attempt": row.attempts}
        now = utcnow()
        context = (
            self.secrets.open(row.payload_encrypted, row.id) if row.payload_encrypted else None
        )
        if row.expires_at <= now or context is None:
            reason = "expired" if row.expires_at <= now else "unreadable"
            outbox_store.mark_failed(row.id, claim_id, reason, erase=True)
            self._outcome("mail_failed", fields, reason=reason)
            report.failed += 1
            return
        if row.template.startswith(REQUEST_PREFIX) and self.request_handler is not None:
            self.request_handler(row.id, claim_id, row.template, context)
            self._outcome("mail_request_resolved", fields)
            report.resolved += 1
            return
        assert self.backend is not None
        try:
            self.backend.send(
                self.renderer.render(row.template, row.recipient, context, message_id=row.id)
            )
        except TransientMailError as error:
            retry_at = now + backoff(row.attempts)
            if retry_at >= row.expires_at:
                outbox_store.mark_failed(row.id, claim_id, f"expired: {error}", erase=True)
                self._outcome("mail_failed", fields, reason="expired", error=str(error))
                report.failed += 1
                return
            outbox_store.reschedule(row.id, claim_id, retry_at, str(error))
            MAIL_RETRIED.inc()
            self._outcome("mail_retry", fields, error=str(error), retry_at=retry_at.isoformat())
            report.retried += 1
        except PermanentMailError as error:
            outbox_store.mark_failed(row.id, claim_id, str(error), erase=False)
            self._outcome("mail_failed", fields, reason="rejected", error=str(error))
            report.failed += 1
        else:
            if not outbox_store.mark_sent(row.id, claim_id, utcnow()):
                # Our claim ran out mid-send and another sender took the message: it may go
                # twice. Said loudly, since the lease is meant to make this impossible.
                self._outcome("mail_claim_lost", fields)
            MAIL_SENT.labels(template=row.template).inc()
            self._outcome("mail_sent", fields)
            report.sent += 1

    @staticmethod
    def _outcome(event: str, fields: dict[str, Any], **more: Any) -> None:
        if event == "mail_failed":
            MAIL_FAILED.labels(reason=more.get("reason", "rejected")).inc()
        level = logging.INFO if event == "mail_sent" else logging.WARNING
        log.log(level, event, extra={"fields": {"event": event, **fields, **more}})
