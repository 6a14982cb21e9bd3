"""E-mail verification, password reset and e-mail change (DESIGN §9), and the page a mailed
link opens (``/email-action``): a GET of it shows a button and spends nothing, so a mail
scanner that follows links burns no token."""

from __future__ import annotations

import secrets

from flask import Blueprint, Response, render_template, request

from ..runtime import runtime
from ..services import email
from ..tokens.flask import authenticated
from .body import parse_body, require_body
from .openapi import documented
from .responses import json_response
from .schemas import (
    Accepted,
    EmailChange,
    EmailRequest,
    LinkToken,
    OptionalEmailRequest,
    PasswordReset,
    UserOut,
    user_out,
)

bp = Blueprint("email", __name__, template_folder="templates")

_BODY_ERRORS = (400, 413, 415)
_ACCEPTED = Accepted(detail="If an account uses that address, a message is on its way.")


def _accepted() -> Response:
    return json_response(_ACCEPTED, 202)


@bp.post("/email/verification")
@documented(
    body=OptionalEmailRequest,
    optional_body=True,
    ok=(202, Accepted),
    errors=(*_BODY_ERRORS, 401, 403, 409, 429, 503),
    auth="bearer-or-body",
    tag="email",
)
def request_verification() -> Response:
    """Send the verification mail again: to `email` (answering alike whether an unverified
    account holds it), or, with an access token and no body, to the caller's address."""
    body = parse_body(OptionalEmailRequest, optional=True)
    address = body.email if body is not None else None
    # No address: the caller's own, so a token is needed (a header, or cookies with CSRF).
    caller = authenticated() if address is None else None
    email.request_verification(address, caller)
    return _accepted()


@bp.post("/email/verify")
@documented(body=LinkToken, ok=(200, UserOut), errors=(*_BODY_ERRORS, 409, 429, 503), tag="email")
def verify() -> Response:
    """Spend a `verify_email` or `change_email` token: the address is the user's, verified."""
    body = require_body(LinkToken)
    return json_response(user_out(email.verify_email(body.token)))


@bp.post("/password/forgot")
@documented(body=EmailRequest, ok=(202, Accepted), errors=(*_BODY_ERRORS, 429, 503), tag="email")
def forgot_password() -> Response:
    """Mail a reset link to `email` if an account uses it; the same answer if none does."""
    email.forgot_password(require_body(EmailRequest).email)
    return _accepted()


@bp.post("/password/reset")
@documented(body=PasswordReset, ok=(204, None), errors=(*_BODY_ERRORS, 429, 503), tag="email")
def reset_password() -> Response:
    """Set a new password with a reset token: every session is revoked, the address verified."""
    body = require_body(PasswordReset)
    email.reset_password(body.token, body.new_password)
    return Response(status=204)


@bp.post("/email/change")
@documented(
    body=EmailChange,
    ok=(202, Accepted),
    errors=(*_BODY_ERRORS, 401, 429, 503),
    auth="bearer",
    tag="email",
)
def change_email() -> Response:
    """Mail a confirmation link to the new address; it replaces the old one when followed, and
    the old address is told."""
    caller = authenticated()
    body = require_body(EmailChange)
    email.change_email(caller, body.email, body.current_password)
    return _accepted()


@bp.get("/email-action")
def email_action() -> Response:
    """The page a mailed link opens: nothing is spent until the user presses its button."""
    # {action} may also sit in the fragment with the token; then the page has no form yet.
    action = request.args.get("action", "")
    nonce = secrets.token_urlsafe(16)
    page = render_template(
        "email_action.html",
        action=action if action in {"verify", "reset"} else "",
        nonce=nonce,
        min_length=runtime().settings.password_min_length,
    )
    response = Response(page, mimetype="text/html")
    response.headers.update(
        {
            # The token is in this page's URL: no referrer leaves it, no cache keeps it, and
            # only this page's own script and style run.
            "Content-Security-Policy": (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
            ),
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        }
    )
    return response
