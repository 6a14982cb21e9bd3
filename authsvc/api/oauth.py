"""POST /introspect (RFC 7662), for services that must not accept a logged-out token."""

from __future__ import annotations

from flask import Blueprint, Response, request
from pydantic import ValidationError

from ..errors import InvalidRequest
from ..security.throttling import client_address
from ..services import clients
from .body import parse_body
from .openapi import documented
from .responses import json_response
from .schemas import Introspection, IntrospectionRequest

bp = Blueprint("oauth", __name__)

_FORM = "application/x-www-form-urlencoded"


def _basic_credentials() -> tuple[str | None, str | None]:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return None, None
    return auth.username, auth.password


def _introspection_request() -> IntrospectionRequest:
    if request.mimetype != _FORM:
        parsed = parse_body(IntrospectionRequest)
        if parsed is None:  # unreachable: the body is not optional
            raise InvalidRequest("A request body is required.")
        return parsed
    form = request.form
    if any(len(form.getlist(key)) > 1 for key in form):
        raise InvalidRequest("Each parameter may appear once.")
    try:
        return IntrospectionRequest.model_validate(form.to_dict())
    except ValidationError:
        raise InvalidRequest(
            "The body must carry `token` (and optionally `token_type_hint`), nothing else."
        ) from None


@bp.post("/introspect")
@documented(
    body=IntrospectionRequest,
    form_body=True,
    ok=(200, Introspection),
    errors=(400, 401, 413, 415, 429, 503),
    auth="basic",
    tag="introspection",
)
def introspect() -> Response:
    """Is this access token live right now? HTTP Basic client credentials required.

    The body is `token=...` (form, as RFC 7662 says) or `{"token": ...}` (JSON).
    """
    clients.require_client(*_basic_credentials(), client_address())
    body = _introspection_request()
    result = clients.introspect(body.token)
    if result is None:
        answer = Introspection(active=False)
    else:
        claims, user = result
        answer = Introspection(
            active=True,
            token_type="Bearer",  # noqa: S106
            sub=claims["sub"],
            username=user.username,
            roles=claims.get("roles", []),
            iss=claims["iss"],
            aud=claims["aud"],
            exp=claims["exp"],
            iat=claims["iat"],
            nbf=claims["nbf"],
            jti=claims["jti"],
            sid=claims["sid"],
            amr=claims.get("amr"),
            aal=claims.get("aal"),
            auth_time=claims.get("auth_time"),
        )
    # RFC 7662: an inactive token gets `{"active": false}` and nothing else.
    response = json_response(answer, exclude_none=True)
    response.headers["Cache-Control"] = "no-store"
    return response
