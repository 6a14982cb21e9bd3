"""Request ids, JSON log lines (one per request and per security event) and Prometheus metrics.

Log lines never carry a password or a whole token: only ids, routes, statuses and reasons.
Metrics use prometheus_client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set (as
gunicorn.conf.py does), so counts are summed across workers.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import time
import uuid
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

REQUESTS = Counter(
    "authsvc_http_requests_total",
    "HTTP requests by endpoint and status.",
    ["endpoint", "method", "status"],
)
LATENCY = Histogram(
    "authsvc_http_request_duration_seconds",
    "HTTP request latency by endpoint.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
SECURITY_EVENTS = Counter(
    "authsvc_security_events_total",
    "Security events (login_failed, refresh_reuse_detected, ...).",
    ["event"],
)
# How each token check learnt its session's state (authsvc.tokens.session_states): "cache",
# "database" (cache usable, row not in it) or "bypass" (no healthy revocation subscription).
SESSION_STATE_READS = Counter(
    "authsvc_session_state_reads_total",
    "Token checks by where the session state came from.",
    ["source"],
)

# The outbox (authsvc.mail.sender): messages handed to the server, given up, retried later, and
# how long the oldest message still queued has waited (the largest over live processes).
MAIL_SENT = Counter("authsvc_mail_sent_total", "Messages handed to the mail server.", ["template"])
MAIL_FAILED = Counter(
    "authsvc_mail_failed_total", "Messages given up (5xx, or expired undelivered).", ["reason"]
)
MAIL_RETRIED = Counter(
    "authsvc_mail_retried_total", "Send attempts that failed and will be retried (4xx, network)."
)
OUTBOX_OLDEST_QUEUED = Gauge(
    "authsvc_outbox_oldest_queued_seconds",
    "Age of the oldest message still queued in the outbox (0: none).",
    multiprocess_mode="livemax",
)

request_log = logging.getLogger("authsvc.request")
security_log = logging.getLogger("authsvc.security")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if "request_id" not in entry and has_request_context():
            # Any line logged while serving a request names it, whoever logged it.
            entry["request_id"] = g.get("request_id")
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of the write (it may be swapped later)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging() -> None:
    """JSON lines on stderr for the authsvc loggers (idempotent)."""
    logger = logging.getLogger("authsvc")
    if any(getattr(handler, "authsvc", False) for handler in logger.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter())
    handler.authsvc = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def log_security_event(event: str, fields: dict[str, Any]) -> None:
    """The JSON line and the counter of one security event (``authsvc.audit`` writes its row)."""
    SECURITY_EVENTS.labels(event=event).inc()
    security_log.info(event, extra={"fields": {"event": event, **fields}})


ACTOR_KEY = "authsvc_actor"


def set_actor(actor_id: str) -> None:
    """Who this request acts as (the verified caller), for the audit rows it writes."""
    if has_request_context():
        setattr(g, ACTOR_KEY, actor_id)


def request_facts() -> tuple[str | None, str | None, str | None]:
    """The request id, client address and actor of the request being served (all None
    outside one: the CLI, the outbox sender)."""
    if not has_request_context():
        return None, None, None
    # The address may come from X-Forwarded-For (AUTHSVC_TRUSTED_PROXIES): printable, bounded.
    address = "".join(char for char in request.remote_addr or "" if char.isprintable())[:64]
    return g.get("request_id"), address or None, g.get(ACTOR_KEY)


def _before_request() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


@functools.cache
def _request_metrics(endpoint: str, method: str, status: int) -> tuple[Any, Any]:
    """The labelled children for one kind of request (looking them up by label costs more than
    counting; the label sets are few: routes x methods x statuses)."""
    return (
        REQUESTS.labels(endpoint=endpoint, method=method, status=str(status)),
        LATENCY.labels(endpoint=endpoint),
    )


def _after_request(response: Response) -> Response:
    request_id = g.get("request_id", "")
    response.headers[REQUEST_ID_HEADER] = request_id
    started = g.get("request_started")
    duration = time.perf_counter() - started if started is not None else 0.0
    rule = request.url_rule
    endpoint = rule.rule if rule is not None else "unmatched"
    method = request.method
    status = response.status_code
    requests_total, latency = _request_metrics(endpoint, method, status)
    requests_total.inc()
    latency.observe(duration)
    request_log.info(
        "request",
        extra={
            "fields": {
                "event": "request",
                "request_id": request_id,
                "method": method,
                "path": request.path,
                "status": status,
                "duration_ms": round(duration * 1000, 2),
                "remote_addr": request.remote_addr,
            }
        },
    )
    return response


def register_observability(app: Flask) -> None:
    configure_logging()
    app.before_request(_before_request)
    app.after_request(_after_request)


def metrics_response() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        payload = generate_latest(registry)
    else:
        payload = generate_latest()
    return Response(payload, mimetype=CONTENT_TYPE_LATEST)
