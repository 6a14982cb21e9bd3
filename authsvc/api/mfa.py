"""Second factors (DESIGN §10): the second step of a login, TOTP enrolment, recovery codes,
listing and removing factors."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response

from ..errors import InvalidRequest
from ..services import mfa
from ..tokens.flask import authenticated
from .body import request_client, require_body
from .openapi import documented
from .responses import json_response, token_response
from .schemas import (
    FactorList,
    FactorOut,
    ReauthWithCode,
    RecoveryCodes,
    TokenResponse,
    TotpConfirmation,
    TotpEnrolmentOut,
    TotpEnrolmentRequest,
)
from .schemas_webauthn import MfaLogin

bp = Blueprint("mfa", __name__)

_BODY_ERRORS = (400, 413, 415)


@bp.post("/login/mfa")
@documented(
    body=MfaLogin,
    ok=(200, TokenResponse),
    errors=(*_BODY_ERRORS, 401, 429, 503),
    tag="mfa",
)
def login() -> Response:
    """The second step of a login: the `mfa_token` of the 403 `mfa_required` answer and a TOTP
    or recovery code (`code`), or a passkey's assertion (`credential`, answering the options
    of /webauthn/mfa/options). A pair at `aal2`."""
    body = require_body(MfaLogin)
    if (body.code is None) == (body.credential is None):
        raise InvalidRequest("Send either code or credential with the mfa_token.")
    credential = body.credential.as_json() if body.credential is not None else None
    result = mfa.complete_login(
        body.mfa_token, request_client(), code=body.code, credential=credential
    )
    return token_response(result)


@bp.get("/mfa")
@documented(ok=(200, FactorList), errors=(401, 503), auth="bearer", tag="mfa")
def list_factors() -> Response:
    """The caller's active factors (never a secret) and how many recovery codes are left."""
    state = mfa.status(authenticated())
    factors = [
        FactorOut(
            id=str(row.id), type=row.type, created_at=row.created_at, last_used_at=row.last_used_at
        )
        for row in state.factors
    ]
    return json_response(FactorList(factors=factors, recovery_codes_left=state.recovery_codes_left))


@bp.post("/mfa/totp")
@documented(
    body=TotpEnrolmentRequest,
    ok=(201, TotpEnrolmentOut),
    errors=(*_BODY_ERRORS, 401, 409, 429, 503),
    auth="bearer-or-body",
    tag="mfa",
)
def enrol_totp() -> Response:
    """Start adding an authenticator app: its secret, `otpauth://` URI and QR code. It counts
    from its confirmation on.

    With an access token the body holds the current password; at login, a user whose role
    needs a factor sends the enrol-only `mfa_token` instead (and no access token).
    """
    body = require_body(TotpEnrolmentRequest)
    if (body.current_password is None) == (body.mfa_token is None):
        raise InvalidRequest("Send either current_password (with an access token) or mfa_token.")
    if body.mfa_token is not None:
        enrolment = mfa.enrol_totp_with_token(body.mfa_token)
    else:
        assert body.current_password is not None
        enrolment = mfa.enrol_totp(authenticated(), body.current_password)
    out = TotpEnrolmentOut(
        id=str(enrolment.id),
        secret=enrolment.secret,
        otpauth_uri=enrolment.otpauth_uri,
        qr_svg=enrolment.qr_svg,
    )
    return json_response(out, 201, no_store=True)  # it holds the secret


@bp.post("/mfa/totp/<uuid:factor_id>/confirm")
@documented(
    body=TotpConfirmation,
    ok=(200, RecoveryCodes),
    errors=(*_BODY_ERRORS, 401, 404, 409, 429, 503),
    auth="bearer-or-body",
    tag="mfa",
)
def confirm_totp(factor_id: uuid.UUID) -> Response:
    """Activate the app with a code it shows: 10 new recovery codes, shown this once. A first
    factor logs out the user's other password-only sessions.

    With the enrol-only `mfa_token` (no access token), the answer is also the login: a token
    response at `aal2` with `recovery_codes` (see EnrolledTokenResponse).
    """
    body = require_body(TotpConfirmation)
    if body.mfa_token is not None:
        user_id = mfa.enrolling_user(body.mfa_token)
        done = mfa.confirm_totp(
            user_id, factor_id, body.code, enrol_token=body.mfa_token, client=request_client()
        )
        assert done.login is not None
        return token_response(done.login, recovery_codes=done.recovery_codes)
    caller = authenticated()
    done = mfa.confirm_totp(caller.user.id, factor_id, body.code, session_id=caller.session_id)
    return _codes(done.recovery_codes)


@bp.delete("/mfa/<uuid:factor_id>")
@documented(
    body=ReauthWithCode,
    ok=(204, None),
    errors=(*_BODY_ERRORS, 401, 404, 409, 429, 503),
    auth="bearer",
    tag="mfa",
)
def remove_factor(factor_id: uuid.UUID) -> Response:
    """Remove a factor: the current password and a code (TOTP or recovery) both."""
    caller = authenticated()
    body = require_body(ReauthWithCode)
    mfa.remove_factor(caller, factor_id, body.current_password, body.code)
    return Response(status=204)


@bp.post("/mfa/recovery-codes")
@documented(
    body=ReauthWithCode,
    ok=(200, RecoveryCodes),
    errors=(*_BODY_ERRORS, 401, 409, 429, 503),
    auth="bearer",
    tag="mfa",
)
def regenerate_recovery_codes() -> Response:
    """Replace the recovery codes with 10 new ones (the old set stops working at once)."""
    caller = authenticated()
    body = require_body(ReauthWithCode)
    return _codes(mfa.regenerate_recovery_codes(caller, body.current_password, body.code))


def _codes(codes: list[str]) -> Response:
    return json_response(RecoveryCodes(recovery_codes=codes), no_store=True)
