"""Request input: the strict JSON body (DESIGN §2) and who is calling.

Flask's own ``get_json`` accepts NaN, keeps the last of duplicate keys and coerces nothing into
errors we control, so bodies are parsed here: 415 unless JSON, 400 for malformed UTF-8 or JSON,
NaN/Infinity, duplicate keys, non-objects, deep nesting, wrong types and unknown fields.
The 64 KiB limit (MAX_CONTENT_LENGTH) answers 413 when the body is read, before any work.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from ..errors import InvalidRequest, UnsupportedMediaType
from ..models import Client

MAX_BODY_BYTES = 64 * 1024
MAX_DEPTH = 4


ModelT = TypeVar("ModelT", bound=BaseModel)

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


def parse_query(model: type[ModelT]) -> ModelT:
    """The query string as ``model`` (each parameter at most once; unknown ones are 400)."""
    values: dict[str, str] = {}
    for name, given in request.args.lists():
        if len(given) > 1:
            raise InvalidRequest(f"Query parameter '{name}' is given more than once.")
        if "\x00" in given[0]:
            raise InvalidRequest(f"Query parameter '{name}' is invalid.")
        values[name] = given[0]
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise InvalidRequest(_describe(error)) from None


def require_body(model: type[ModelT]) -> ModelT:
    parsed = parse_body(model)
    if parsed is None:  # unreachable: only optional bodies come back empty
        raise InvalidRequest("A request body is required.")
    return parsed


def request_client() -> Client:
    """The caller as stored on a session. ProxyFix has already applied AUTHSVC_TRUSTED_PROXIES.

    Both come from headers the client controls: control characters (PostgreSQL refuses NUL in
    text) are dropped and the lengths bounded to the columns.
    """
    agent = _printable(request.headers.get("User-Agent") or "")[:512]
    address = _printable(request.remote_addr or "")[:64]
    return Client(user_agent=agent or None, ip=address or None)


def _printable(value: str) -> str:
    return "".join(char for char in value if char.isprintable())
