"""The HTTP API: one thin blueprint per resource (parse, call a service, serialise), plus the
shared request parsing (body.py), responses (responses.py) and OpenAPI document (openapi.py)."""

from __future__ import annotations

from flask import Flask

from . import account, auth, email, oauth, ops, wellknown
from .body import MAX_BODY_BYTES
from .responses import NoSessionInterface


def register_api(app: Flask) -> None:
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.session_interface = NoSessionInterface()
    for blueprint in (auth.bp, account.bp, email.bp, oauth.bp, wellknown.bp, ops.bp):
        app.register_blueprint(blueprint)
