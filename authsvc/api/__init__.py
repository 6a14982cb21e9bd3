"""The HTTP API: one thin blueprint per resource (parse, call a service, serialise), plus the
shared request parsing (body.py), responses (responses.py) and OpenAPI document (openapi.py)."""

from __future__ import annotations

from flask import Flask

from . import account, admin, auth, email, mfa, oauth, ops, webauthn, wellknown
from .body import MAX_BODY_BYTES
from .responses import NoSessionInterface


def register_api(app: Flask) -> None:
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.session_interface = NoSessionInterface()
    blueprints = (
        auth.bp,
        account.bp,
        admin.bp,
        email.bp,
        mfa.bp,
        webauthn.bp,
        oauth.bp,
        wellknown.bp,
        ops.bp,
    )
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
