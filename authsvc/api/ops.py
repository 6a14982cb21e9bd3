"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import copy
import re
from typing import Any

from flask import Blueprint, Response, current_app, json
from sqlalchemy import text

from ..errors import PROBLEM_JSON, UNAVAILABLE_RETRY_AFTER
from ..extensions import db, openapi
from ..observability import metrics_response
from ..runtime import runtime
from ..schemas import Health, Problem
from .common import OPENAPI_EXTRA, documented, json_response

_FORM = "application/x-www-form-urlencoded"

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
    document = current_app.extensions.get(_DOCUMENT_KEY)
    if document is None:
        document = json.dumps(_complete(copy.deepcopy(openapi.spec)))
        current_app.extensions[_DOCUMENT_KEY] = document
    return Response(document, mimetype="application/json")


_DOCUMENT_KEY = "authsvc.openapi"
_PATH_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _complete(spec: dict[str, Any]) -> dict[str, Any]:
    """Add what spectree cannot express: problem+json errors, optional and form bodies, and a
    bearer token that may come from the body instead (from each view's `documented` extras)."""
    for path_item in spec["paths"].values():
        for operation in path_item.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                schema = content.get("application/json", {}).get("schema", {})
                if schema.get("$ref", "").split("/")[-1].startswith("Problem."):
                    content[PROBLEM_JSON] = content.pop("application/json")
    for rule in current_app.url_map.iter_rules():
        extra = _extra(current_app.view_functions[rule.endpoint])
        path = _PATH_PARAMETER.sub(r"{\1}", rule.rule)
        for method in rule.methods or ():
            operation = spec["paths"].get(path, {}).get(method.lower())
            if extra is None or operation is None:
                continue
            body = operation.get("requestBody")
            if body is not None and extra["optional_body"]:
                body["required"] = False
            if body is not None and extra["form_body"]:
                body["content"][_FORM] = dict(body["content"]["application/json"])
            if extra["bearer_optional"]:
                operation["security"] = [{"bearer": []}, {}]
    return spec


def _extra(view: Any) -> dict[str, bool] | None:
    while view is not None:
        extra = getattr(view, OPENAPI_EXTRA, None)
        if extra is not None:
            return extra
        view = getattr(view, "__wrapped__", None)
    return None
