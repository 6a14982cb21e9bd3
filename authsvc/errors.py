"""Domain errors and their problem+json responses (RFC 9457), mapped in this one place.

A leaf: it imports no authsvc module, so every layer may raise these. The one mapping that
needs another module's state, 429 with the limit's own ``Retry-After``, is registered by
``authsvc.security.throttling``.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from http import HTTPStatus

from flask import Flask, Response, json
from flask_jwt_extended.exceptions import CSRFError
from limits.errors import StorageError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

log = logging.getLogger("authsvc.errors")

PROBLEM_JSON = "application/problem+json"
BEARER_REALM = 'Bearer realm="authsvc"'
INVALID_TOKEN_CHALLENGE = 'Bearer realm="authsvc", error="invalid_token"'  # noqa: S105
# How long a client should wait before retrying while the database or Redis is unreachable.
UNAVAILABLE_RETRY_AFTER = 5

_CODES_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


class AuthsvcError(Exception):
    """Base of every error a client may see. Subclasses set status and code."""

    status: int = 400
    code: str = "invalid_request"
    detail: str = "The request is invalid."

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ):
        super().__init__(detail or self.detail)
        self.detail = detail or self.detail
        self.headers = dict(headers or {})
        # Extension members of the problem (RFC 9457 §3.2), e.g. the mfa_token of mfa_required.
        self.extra = dict(extra or {})

    def response(self) -> Response:
        return problem(self.status, self.code, self.detail, self.headers, self.extra)


class InvalidRequest(AuthsvcError):
    status, code = 400, "invalid_request"


class UnsupportedMediaType(AuthsvcError):
    status, code = 415, "unsupported_media_type"
    detail = "The request body must be JSON (Content-Type: application/json)."


class InvalidUsername(AuthsvcError):
    status, code = 400, "invalid_username"


class WeakPassword(AuthsvcError):
    status, code = 400, "weak_password"


class UsernameTaken(AuthsvcError):
    status, code = 409, "username_taken"
    detail = "That username is already taken."


class InvalidEmail(AuthsvcError):
    status, code = 400, "invalid_email"
    detail = "That is not a valid e-mail address."


class EmailTaken(AuthsvcError):
    status, code = 409, "email_taken"
    detail = "That e-mail address belongs to another account."


class EmailNotVerified(AuthsvcError):
    status, code = 403, "email_not_verified"
    detail = "Confirm your e-mail address first: follow the link in the mail we sent."


class EmailRequired(AuthsvcError):
    status, code = 400, "email_required"
    detail = "An e-mail address is required to sign up here."


class NoEmail(AuthsvcError):
    status, code = 400, "no_email"
    detail = "This account has no e-mail address."


class EmailAlreadyVerified(AuthsvcError):
    status, code = 409, "email_already_verified"
    detail = "This e-mail address is already verified."


class FeatureDisabled(AuthsvcError):
    status, code = 403, "feature_disabled"
    detail = "This feature is turned off here."


class InvalidLinkToken(AuthsvcError):
    """A mailed token that is unknown, spent, expired or for another purpose. Not a bearer
    token, so no WWW-Authenticate challenge (DESIGN §9)."""

    status, code = 400, "invalid_token"
    detail = "The link is invalid, used or expired; ask for a new one."


class InsufficientAuthentication(AuthsvcError):
    """An action that needs a session proven by a second factor, from one that was not
    (RFC 9470's error code)."""

    status, code = 403, "insufficient_user_authentication"
    detail = "This needs a session proven with a second factor: log in with it first."


class MfaRequired(AuthsvcError):
    """The right password of a user with a second factor: the login goes on at /login/mfa with
    the ``mfa_token`` this carries (DESIGN §10)."""

    status, code = 403, "mfa_required"
    detail = "A second factor is required: send a code with the mfa_token to /login/mfa."


class MfaEnrolmentRequired(AuthsvcError):
    """The right password of a user whose role needs a second factor they have not set up: the
    ``mfa_token`` this carries can only enrol one (AUTHSVC_MFA_REQUIRED_ROLES)."""

    status, code = 403, "mfa_enrolment_required"
    detail = "This account must set up a second factor: enrol one with the mfa_token."


class InvalidCode(AuthsvcError):
    status, code = 401, "invalid_code"
    detail = "The code is wrong, expired or already used."


class CodeRequired(AuthsvcError):
    """An account with a second factor, asked to re-authenticate without a code."""

    status, code = 401, "code_required"
    detail = "This account has a second factor: give a TOTP code or a recovery code."


class InvalidMfaToken(AuthsvcError):
    """An mfa_token that is unknown, spent, expired or out of attempts. Not a bearer token, so
    no WWW-Authenticate challenge (DESIGN §10)."""

    status, code = 401, "invalid_token"
    detail = "The mfa_token is invalid, used, expired or out of attempts; log in again."


class FactorExists(AuthsvcError):
    status, code = 409, "factor_exists"
    detail = "This account already has an authenticator app; remove it first."


class MfaNotEnabled(AuthsvcError):
    status, code = 409, "mfa_not_enabled"
    detail = "This account has no second factor."


class FactorRequired(AuthsvcError):
    status, code = 409, "factor_required"
    detail = "A role of this account requires a second factor: this is its last one."


class TooManyPasskeys(AuthsvcError):
    status, code = 409, "too_many_passkeys"
    detail = "This account has 10 passkeys already; remove one first."


class InvalidPasskeyCredential(AuthsvcError):
    status, code = 400, "invalid_credential"
    detail = "The passkey could not be registered: start again from the options."


class Forbidden(AuthsvcError):
    status, code = 403, "forbidden"
    detail = "This token does not give access to this resource."


class MfaRequiredForAdmin(AuthsvcError):
    """An admin whose session was proven by a password alone (DESIGN §11)."""

    status, code = 403, "mfa_required_for_admin"
    detail = "The admin API needs a session proven with a second factor (aal2)."


class RoleNotHeld(AuthsvcError):
    """An admin granting a role it does not hold itself (DESIGN §11)."""

    status, code = 403, "role_not_held"
    detail = "Only roles you hold yourself can be granted."


class LastAdmin(AuthsvcError):
    status, code = 409, "last_admin"
    detail = "This is the last active admin: it cannot be demoted, disabled or deleted."


class InvalidCursor(AuthsvcError):
    status, code = 400, "invalid_cursor"
    detail = "The cursor is not one this list handed out."


class InvalidCredentials(AuthsvcError):
    status, code = 401, "invalid_credentials"
    detail = "The username or password is incorrect."


class InvalidToken(AuthsvcError):
    status, code = 401, "invalid_token"
    detail = "The token is invalid."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": INVALID_TOKEN_CHALLENGE})


class TokenRevoked(InvalidToken):
    code = "token_revoked"
    detail = "The token has been revoked."


class MissingToken(AuthsvcError):
    status, code = 401, "missing_token"
    detail = "This endpoint needs a bearer token."

    def __init__(self, detail: str | None = None) -> None:
        # RFC 6750 §3.1: no error parameter when the request carried no credentials.
        super().__init__(detail, headers={"WWW-Authenticate": BEARER_REALM})


class InvalidClient(AuthsvcError):
    status, code = 401, "invalid_client"
    detail = "Client authentication failed."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Basic realm="authsvc"'})


class InvalidCsrf(AuthsvcError):
    status, code = 401, "invalid_csrf"
    detail = "The CSRF token is missing or does not match."


class NotFound(AuthsvcError):
    status, code = 404, "not_found"
    detail = "No such resource."


class RateLimited(AuthsvcError):
    status, code = 429, "rate_limited"
    detail = "Too many requests; try again later."


class Unavailable(AuthsvcError):
    status, code = 503, "unavailable"
    detail = "A backing service is unavailable; try again shortly."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)})


def problem(
    status: int,
    code: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> Response:
    """A problem+json response with a stable ``code`` (and any extension members)."""
    body = {
        **(extra or {}),
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    response.headers.update(headers or {})
    if extra:
        # An extension member may be a secret (mfa_required's mfa_token): never cached.
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    return response


def _http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    code = _CODES_BY_STATUS.get(status, "http_error")
    detail = {
        404: "No such resource.",
        405: "That method is not allowed on this resource.",
        413: "The request body is too large.",
    }.get(status, HTTPStatus(status).description)
    headers: dict[str, str] = {}
    if status == 405 and getattr(error, "valid_methods", None):
        headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return problem(status, code, detail, headers)


def _unavailable(error: Exception) -> Response:
    # Fail closed: a store we cannot reach means no answer, never an unchecked yes.
    log.warning("backing service unavailable: %s", type(error).__name__)
    return Unavailable().response()


def _database_error(error: DBAPIError) -> Response:
    if isinstance(error, OperationalError) or error.connection_invalidated:
        return _unavailable(error)
    # Not log.exception: the driver's message carries row values (PostgreSQL's "DETAIL: Failing
    # row contains (...)", "Key (...)=(...) already exists"): password hashes, token ids. The
    # log gets what identifies the failure without them: the error class, the SQL state and
    # constraint, the server's primary message, the statement (its parameters are hidden by the
    # engine) and where it was raised. (The log formatter adds the request id.)
    log.error(
        "unhandled database error",
        extra={"fields": {"event": "unhandled_error", **_database_error_fields(error)}},
    )
    return problem(500, "internal_error", "An unexpected error occurred.")


def _database_error_fields(error: DBAPIError) -> dict[str, object]:
    driver_error = error.orig
    diagnostics = getattr(driver_error, "diag", None)  # psycopg
    if diagnostics is not None:
        message = diagnostics.message_primary
    else:  # sqlite3 names the constraint or table, never a value
        message = str(driver_error) if driver_error is not None else None
    return {
        "exception": type(error).__name__,
        "driver_exception": type(driver_error).__name__,
        "sqlstate": getattr(driver_error, "sqlstate", None),
        "constraint": getattr(diagnostics, "constraint_name", None),
        "message": message,
        "statement": error.statement,
        "traceback": "".join(traceback.format_tb(error.__traceback__)),
    }


def _internal(error: Exception) -> Response:
    log.exception("unhandled error")
    return problem(500, "internal_error", "An unexpected error occurred.")


def register_error_handlers(app: Flask, *, uses_redis: bool) -> None:
    """Every exception a request can raise, as problem+json (429 is throttling's own)."""
    app.register_error_handler(AuthsvcError, lambda error: error.response())
    # flask-jwt-extended sends a CSRF failure to its "unauthorized" callback (as if no token had
    # been sent); registered after JWTManager.init_app, this handler replaces its own.
    app.register_error_handler(CSRFError, lambda _error: InvalidCsrf().response())
    app.register_error_handler(StorageError, _unavailable)
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(DBAPIError, _database_error)
    app.register_error_handler(PoolTimeoutError, _unavailable)
    if uses_redis:
        from redis.exceptions import RedisError  # imported only when used (memory per worker)

        app.register_error_handler(RedisError, _unavailable)
    app.register_error_handler(Exception, _internal)
