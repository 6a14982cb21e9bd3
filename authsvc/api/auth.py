"""Signup, login, refresh and logout."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response
from flask_jwt_extended import (
    get_jwt,
    get_jwt_request_location,
    verify_jwt_in_request,
)

from .. import services
from ..schemas import Credentials, LogoutRequest, RefreshRequest, TokenResponse
from .common import (
    access_context,
    clear_cookies,
    client,
    cookie_mode,
    documented,
    parse_body,
    refresh_cookie_only,
    require_body,
    token_response,
)

bp = Blueprint("auth", __name__)

_BODY_ERRORS = (400, 413, 415)
# 503 wherever the database or Redis is needed; 429 where throttling applies.
_STORES = (503,)


@bp.post("/signup")
@documented(
    body=Credentials,
    ok=(201, TokenResponse),
    errors=(*_BODY_ERRORS, 409, 429, *_STORES),
    tag="auth",
)
def signup() -> Response:
    """Create an account and its first session."""
    body = require_body(Credentials)
    return token_response(services.signup(body.username, body.password, client()), 201)


@bp.post("/login")
@documented(
    body=Credentials,
    ok=(200, TokenResponse),
    errors=(*_BODY_ERRORS, 401, 429, *_STORES),
    tag="auth",
)
def login() -> Response:
    """Log in: a new session and a token pair."""
    body = require_body(Credentials)
    return token_response(services.login(body.username, body.password, client()))


@bp.post("/refresh")
@documented(
    body=RefreshRequest,
    optional_body=True,
    ok=(200, TokenResponse),
    errors=(*_BODY_ERRORS, 401, 429, *_STORES),
    auth="bearer-or-body",
    tag="auth",
)
def refresh() -> Response:
    """Rotate a refresh token: a new pair; the old token stays usable for the grace window only.

    The refresh token travels in `Authorization: Bearer`, the JSON `refresh_token` field, or
    the refresh cookie in cookie mode.
    """
    body = parse_body(RefreshRequest, optional=True)
    locations = ["headers"]
    if body is not None and body.refresh_token:
        locations.append("json")
    if cookie_mode():
        locations.append("cookies")
    # The rotation's own UPDATE is the session check (live, this user's, user active), so the
    # separate revocation lookup would only repeat it.
    verify_jwt_in_request(refresh=True, locations=locations, skip_revocation_check=True)
    claims = get_jwt()
    result = services.refresh(
        uuid.UUID(claims["sid"]), claims["gen"], uuid.UUID(claims["sub"]), client()
    )
    return token_response(result, from_cookie=get_jwt_request_location() == "cookies")


@bp.post("/logout")
@documented(
    body=LogoutRequest,
    optional_body=True,
    ok=(204, None),
    errors=(*_BODY_ERRORS, 401, *_STORES),
    auth="bearer",
    tag="auth",
)
def logout() -> Response:
    """Revoke this session (`local`), every session (`global`) or every other one (`others`).

    Takes an access or a refresh token. In cookie mode a browser whose access cookie has
    already expired logs out with the refresh cookie (it is also scoped to /logout).
    """
    if cookie_mode() and refresh_cookie_only():
        verify_jwt_in_request(refresh=True, locations=["cookies"])
    else:
        verify_jwt_in_request(verify_type=False)
    body = parse_body(LogoutRequest, optional=True)
    services.logout(access_context(), body.scope if body is not None else "local")
    response = Response(status=204)
    if cookie_mode():
        clear_cookies(response)
    return response
