"""The OpenAPI 3.1 document, generated from the pydantic models the views parse with.

spectree only documents (``skip_validation=True`` on each view): the views validate bodies
themselves (``authsvc.api.body``) to give problem+json errors for every malformed input.
``document()`` then adds what spectree cannot express.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, json
from pydantic import BaseModel
from spectree import Response as SpecResponse
from spectree import SecurityScheme, SecuritySchemeData, SpecTree

from ..errors import PROBLEM_JSON
from .schemas import Problem

ViewT = TypeVar("ViewT", bound=Callable[..., Any])

spec = SpecTree(
    "flask",
    title="authsvc",
    version="0.1.0",
    description="A token issuer: signup, login, rotating refresh tokens, JWKS.",
    mode="strict",
    annotations=False,
    # Bad input is a 400 problem (authsvc.api.body.parse_body), never spectree's 422.
    validation_error_status=400,
    validation_error_model=Problem,
    security_schemes=[
        SecurityScheme(
            name="bearer",
            data=SecuritySchemeData(type="http", scheme="bearer", bearer_format="JWT"),
        ),
        SecurityScheme(name="basic", data=SecuritySchemeData(type="http", scheme="basic")),
    ],
)

# What spectree cannot say, kept on the view for document() to add.
OPENAPI_EXTRA = "_authsvc_openapi"


def documented(
    *,
    ok: tuple[int, type[BaseModel] | None],
    errors: tuple[int, ...] = (),
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
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
    spectree = spec.validate(
        json=body,
        query=query,
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


_FORM = "application/x-www-form-urlencoded"
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


def document() -> str:
    """The whole document as JSON text, built once per app."""
    text = current_app.extensions.get(_DOCUMENT_KEY)
    if text is None:
        text = json.dumps(_complete(copy.deepcopy(spec.spec)))
        current_app.extensions[_DOCUMENT_KEY] = text
    return text
