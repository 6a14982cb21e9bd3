"""Request parsing and response helpers shared by the blueprints.

Strict JSON request bodies (DESIGN §2):
Flask's own ``get_json`` accepts NaN, keeps the last of duplicate keys and coerces nothing into
errors we control, so bodies are parsed here: 415 unless JSON, 400 for malformed UTF-8 or JSON,
NaN/Infinity, duplicate keys, non-objects, deep nesting, wrong types and unknown fields.
The 64 KiB limit (MAX_CONTENT_LENGTH) answers 413 when the body is read, before any work.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from flask import Flask, Request, Response, current_app, request
from flask.sessions import SessionInterface
from flask_jwt_extended import (
    current_user,
    get_jwt,
    set_access_cookies,
    set_refresh_cookies,
    unset_jwt_cookies,
)
from pydantic import BaseModel, ValidationError
from spectree import Response as SpecResponse

from ..errors import InvalidRequest, UnsupportedMediaType
from ..extensions import openapi
from ..models import utcnow
from ..runtime import runtime
from ..schemas import Problem, TokenResponse, user_out
from ..services import AccessContext, AuthResult, Client

MAX_BODY_BYTES = 64 * 1024
MAX_DEPTH = 4


class NoSessionInterface(SessionInterface):
    """No ``flask.session``: the tokens are the session, and nothing here reads Flask's.

    Flask's default interface builds a signing serializer and looks for its cookie on every
    request (3 % of a ``/me``); with this one ``flask.session`` is Flask's ``NullSession``,
    which refuses writes.
    """

    def open_session(self, app: Flask, request: Request) -> None:
        return None

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        return None


ModelT = TypeVar("ModelT", bound=BaseModel)
ViewT = TypeVar("ViewT", bound=Callable[..., Any])

_ERROR_TEMPLATES = {
    "missing": "is required",
    "extra_forbidden": "is not allowed",
    "string_type": "must be a string",
    "string_too_long": "is too long",
    "literal_error": "has an unsupported value",
    "int_type": "must be an integer",
    "bool_type": "must be a boolean",
}


class _Duplicate(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _depth(value: Any, level: int = 1) -> int:
    if isinstance(value, dict):
        return max((_depth(item, level + 1) for item in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(item, level + 1) for item in value), default=level)
    return level


def _describe(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    return f"Field '{field}' {_ERROR_TEMPLATES.get(first['type'], 'is invalid')}."


def parse_body(model: type[ModelT], *, optional: bool = False) -> ModelT | None:
    """Parse and validate the request body as ``model``; None for an empty optional body."""
    data = request.get_data(cache=True)
    if optional and not data.strip():
        # An empty body is no body, whatever its Content-Type claims.
        return None
    if request.mimetype != "application/json":
        raise UnsupportedMediaType()
    try:
        parsed = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_reject_constant,
        )
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not valid UTF-8.") from None
    except _Duplicate as duplicate:
        raise InvalidRequest(f"Duplicate key '{duplicate}' in the request body.") from None
    except (ValueError, RecursionError):
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if _depth(parsed) > MAX_DEPTH:
        raise InvalidRequest("The request body is nested too deeply.")
    try:
        return model.model_validate(parsed)
    except ValidationError as error:
        raise InvalidRequest(_describe(error)) from None


def require_body(model: type[ModelT]) -> ModelT:
    parsed = parse_body(model)
    if parsed is None:  # unreachable: only optional bodies come back empty
        raise InvalidRequest("A request body is required.")
    return parsed


def client() -> Client:
    """The caller as stored on a session. ProxyFix has already applied AUTHSVC_TRUSTED_PROXIES.

    Both come from headers the client controls: control characters (PostgreSQL refuses NUL in
    text) are dropped and the lengths bounded to the columns.
    """
    agent = _printable(request.headers.get("User-Agent") or "")[:512]
    address = _printable(request.remote_addr or "")[:64]
    return Client(user_agent=agent or None, ip=address or None)


def _printable(value: str) -> str:
    return "".join(char for char in value if char.isprintable())


def cookie_mode() -> bool:
    return "cookies" in runtime().settings.token_location


def token_response(result: AuthResult, status: int = 200, *, from_cookie: bool = False) -> Response:
    """The token response; in cookie mode the tokens are also set as httpOnly cookies.

    When the request itself authenticated with a cookie (a browser's silent refresh), the body
    leaves the tokens out: handing them to page scripts would undo what httpOnly protects.
    """
    tokens = result.tokens
    body = TokenResponse(
        access_token=None if from_cookie else tokens.access_token,
        refresh_token=None if from_cookie else tokens.refresh_token,
        expires_in=tokens.expires_in,
        user=user_out(result.user),
    )
    response = Response(
        body.model_dump_json(exclude_none=True), status=status, mimetype="application/json"
    )
    # RFC 6749 §5.1: responses carrying tokens must not be cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    if cookie_mode():
        set_access_cookies(response, tokens.access_token, max_age=tokens.expires_in)
        refresh_max_age = max(int((tokens.refresh_expires_at - utcnow()).total_seconds()), 1)
        set_refresh_cookies(response, tokens.refresh_token, max_age=refresh_max_age)
        # A second copy for /logout, so a browser can log out after its access cookie expired.
        # The refresh token still travels to no other path.
        _refresh_cookie(response, tokens.refresh_token, max_age=refresh_max_age)
    return response


LOGOUT_PATH = "/logout"


def _refresh_cookie(response: Response, value: str, *, max_age: int) -> None:
    config = current_app.config
    response.set_cookie(
        config["JWT_REFRESH_COOKIE_NAME"],
        value=value,
        max_age=max_age,
        secure=config["JWT_COOKIE_SECURE"],
        httponly=True,
        path=LOGOUT_PATH,
        samesite=config["JWT_COOKIE_SAMESITE"],
    )


def refresh_cookie_only() -> bool:
    """A cookie-mode request carrying the refresh cookie but no access token at all."""
    config = current_app.config
    return (
        "Authorization" not in request.headers
        and config["JWT_ACCESS_COOKIE_NAME"] not in request.cookies
        and config["JWT_REFRESH_COOKIE_NAME"] in request.cookies
    )


def clear_cookies(response: Response) -> None:
    """Every token and CSRF cookie, including the /logout copy of the refresh cookie."""
    unset_jwt_cookies(response)
    config = current_app.config
    response.delete_cookie(
        config["JWT_REFRESH_COOKIE_NAME"],
        path=LOGOUT_PATH,
        secure=config["JWT_COOKIE_SECURE"],
        httponly=True,
        samesite=config["JWT_COOKIE_SAMESITE"],
    )


def json_response(model: BaseModel, status: int = 200, *, exclude_none: bool = False) -> Response:
    body = model.model_dump_json(exclude_none=exclude_none)
    return Response(body, status=status, mimetype="application/json")


def access_context() -> AccessContext:
    """The verified caller of a @jwt_required view."""
    claims = get_jwt()
    return AccessContext(
        user=current_user,
        session_id=uuid.UUID(claims["sid"]),
        jti=claims["jti"],
        token_type=claims["type"],
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )


# What spectree cannot say, kept on the view for authsvc.api.ops to add to the document.
OPENAPI_EXTRA = "_authsvc_openapi"


def documented(
    *,
    ok: tuple[int, type[BaseModel] | None],
    errors: tuple[int, ...] = (),
    body: type[BaseModel] | None = None,
    optional_body: bool = False,
    form_body: bool = False,
    auth: str | None = None,
    tag: str,
) -> Callable[[ViewT], ViewT]:
    """Describe a view in /openapi.json from the same models it parses with (no validation).

    ``auth``: "bearer", "bearer-or-body" (the refresh token may also come in the body or a
    cookie), "basic", or None.
    """
    status, model = ok
    responses: dict[str, Any] = {f"HTTP_{status}": model}
    for code in errors:
        responses[f"HTTP_{code}"] = Problem
    spectree = openapi.validate(
        json=body,
        resp=SpecResponse(**responses),
        tags=[tag],
        security={"basic": []} if auth == "basic" else {"bearer": []} if auth else None,
        skip_validation=True,
    )

    def decorate(view: ViewT) -> ViewT:
        documentation = spectree(view)

        # What Flask calls: the view itself. With skip_validation spectree's wrapper would only
        # unpack and re-pack every response (copying its body) on the hot path. spectree finds
        # the metadata it needs for /openapi.json by following ``__wrapped__`` to its wrapper.
        @functools.wraps(view)
        def served(*args: Any, **kwargs: Any) -> Any:
            return view(*args, **kwargs)

        served.__wrapped__ = documentation  # type: ignore[attr-defined]
        setattr(
            served,
            OPENAPI_EXTRA,
            {
                "optional_body": optional_body,
                "form_body": form_body,
                "bearer_optional": auth == "bearer-or-body",
            },
        )
        return served  # type: ignore[return-value]

    return decorate
