"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, json

from ..errors import PROBLEM_JSON, UNAVAILABLE_RETRY_AFTER, NotFound
from ..observability import metrics_response
from ..runtime import runtime
from ..services import health
from . import openapi
from .openapi import documented
from .responses import json_response
from .schemas import Health, Problem

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@documented(ok=(200, Health), tag="operations")
def healthz() -> Response:
    """The process is up (no dependency is checked: a restart would not fix them)."""
    return json_response(Health(status="ok"))


@bp.get("/readyz")
@documented(ok=(200, Health), errors=(503,), tag="operations")
def readyz() -> Response:
    """Ready for traffic: the database answers, Redis answers (when configured), a key can sign."""
    checks = health.readiness()
    if all(value == "ok" for value in checks.values()):
        return json_response(Health(status="ok", checks=checks))
    body = Problem(
        title="Service Unavailable",
        status=503,
        detail="A dependency is unavailable.",
        code="unavailable",
    ).model_dump()
    body["checks"] = checks
    response = Response(json.dumps(body), status=503, mimetype=PROBLEM_JSON)
    response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
    return response


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format, on this listener in development only (DESIGN §2: internal).

    Elsewhere metrics are served by gunicorn's master on AUTHSVC_METRICS_BIND (gunicorn.conf.py),
    a listener of their own that never faces the public, or not at all when that is unset.
    """
    settings = runtime().settings
    if not settings.development or settings.metrics_bind:
        raise NotFound()
    return metrics_response()


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3.1 document, generated from the request and response models."""
    return Response(openapi.document(), mimetype="application/json")
