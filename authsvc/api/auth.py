"""Signup, login, refresh and logout."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response

from ..services import accounts, sessions
from ..tokens.flask import authenticated, refresh_token_claims, token_came_from_cookie
from .body import parse_body, request_client, require_body
from .openapi import documented
from .responses import (
    clear_cookies,
    cookie_mode,
    json_response,
    refresh_cookie_only,
    token_response,
)
from .schemas import (
    Credentials,
    LogoutRequest,
    RefreshRequest,
    SignupPending,
    SignupRequest,
    TokenResponse,
    user_out,
)

bp = Blueprint("auth", __name__)

_BODY_ERRORS = (400, 413, 415)
# 503 wherever the database or Redis is needed; 429 where throttling applies.
_STORES = (503,)


@bp.post("/signup")
@documented(
    body=SignupRequest,
    ok=(201, TokenResponse),
    errors=(*_BODY_ERRORS, 409, 429, *_STORES),
    tag="auth",
)
def signup() -> Response:
    """Create an account and its first session; with an `email`, mail its verification link.

    With AUTHSVC_EMAIL_VERIFICATION=required the answer is `{"user": ...}` alone: the user logs
    in once the address is verified.
    """
    body = require_body(SignupRequest)
    result = accounts.signup(body.username, body.password, request_client(), body.email)
    if result.tokens is None:
        return json_response(SignupPending(user=user_out(result.user)), 201)
    return token_response(result, 201)


@bp.post("/login")
@documented(
    body=Credentials,
    ok=(200, TokenResponse),
    errors=(*_BODY_ERRORS, 401, 403, 429, *_STORES),
    tag="auth",
)
def login() -> Response:
    """Log in: a new session and a token pair."""
    body = require_body(Credentials)
    return token_response(accounts.login(body.username, body.password, request_client()))


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
    claims = refresh_token_claims(locations)
    result = sessions.refresh(
        uuid.UUID(claims["sid"]), claims["gen"], uuid.UUID(claims["sub"]), request_client()
    )
    return token_response(result, from_cookie=token_came_from_cookie())


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
        caller = authenticated(refresh=True, locations=["cookies"])
    else:
        caller = authenticated(any_type=True)
    body = parse_body(LogoutRequest, optional=True)
    sessions.logout(caller, body.scope if body is not None else "local")
    response = Response(status=204)
    if cookie_mode():
        clear_cookies(response)
    return response
