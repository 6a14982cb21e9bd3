"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, json
from sqlalchemy import text

from ..errors import PROBLEM_JSON, UNAVAILABLE_RETRY_AFTER
from ..extensions import db, openapi
from ..observability import metrics_response
from ..runtime import runtime
from ..schemas import Health, Problem
from .common import documented, json_response

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
    rt = runtime()
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:  # any failure means not ready; the reason is not a client's business
        db.session.rollback()
        checks["database"] = "unavailable"
    if rt.redis is not None:
        try:
            rt.redis.ping()
            checks["redis"] = "ok"
        except Exception:
            checks["redis"] = "unavailable"
    if checks["database"] == "ok":
        try:
            rt.keyring.signing_key()
            checks["keys"] = "ok"
        except Exception:
            db.session.rollback()
            checks["keys"] = "unavailable"
    else:
        checks["keys"] = "unavailable"
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
    """Prometheus text format. Internal: keep it off the public load balancer."""
    return metrics_response()


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3.1 document, generated from the request and response models."""
    return Response(json.dumps(openapi.spec), mimetype="application/json")
