"""Responses the blueprints share: JSON, the token response and the cookies of cookie mode."""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, Response, current_app, request
from flask.sessions import SessionInterface
from flask_jwt_extended import set_access_cookies, set_refresh_cookies, unset_jwt_cookies
from pydantic import BaseModel

from ..models import AuthResult, utcnow
from ..runtime import runtime
from .schemas import EnrolledTokenResponse, TokenResponse, user_out


class NoSessionInterface(SessionInterface):
    """No ``flask.session``: the tokens are the session, and nothing here reads Flask's.

    Flask's default interface builds a signing serializer and looks for its cookie on every
    request (a measurable part of a ``/me``, bench/README.md item 11); with this one
    ``flask.session`` is Flask's ``NullSession``, which refuses writes.
    """

    def open_session(self, app: Flask, request: Request) -> None:
        return None

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        return None


def cookie_mode() -> bool:
    return "cookies" in runtime().settings.token_location


def token_response(
    result: AuthResult,
    status: int = 200,
    *,
    from_cookie: bool = False,
    recovery_codes: list[str] | None = None,
) -> Response:
    """The token response; in cookie mode the tokens are also set as httpOnly cookies.

    When the request itself authenticated with a cookie (a browser's silent refresh), the body
    leaves the tokens out: handing them to page scripts would undo what httpOnly protects.
    """
    tokens = result.tokens
    assert tokens is not None, "a token response needs tokens"
    fields = dict(
        access_token=None if from_cookie else tokens.access_token,
        refresh_token=None if from_cookie else tokens.refresh_token,
        expires_in=tokens.expires_in,
        user=user_out(result.user),
    )
    body = (
        TokenResponse(**fields)
        if recovery_codes is None
        else EnrolledTokenResponse(**fields, recovery_codes=recovery_codes)
    )
    # Left out in cookie mode's silent refresh: the tokens (`email` stays, null or not).
    hidden = {"access_token", "refresh_token"} if from_cookie else None
    response = Response(
        body.model_dump_json(exclude=hidden), status=status, mimetype="application/json"
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


def json_response(
    model: BaseModel, status: int = 200, *, exclude_none: bool = False, no_store: bool = False
) -> Response:
    """``model`` as JSON; ``no_store`` for a body holding a secret (a TOTP secret, recovery
    codes), which no cache may keep."""
    body = model.model_dump_json(exclude_none=exclude_none)
    response = Response(body, status=status, mimetype="application/json")
    if no_store:
        response.headers["Cache-Control"] = "no-store"
    return response
