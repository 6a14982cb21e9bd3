"""Passkeys (WebAuthn, DESIGN §10): registering one, the passwordless login, and the options
for a passkey as the second factor of a password login (whose answer goes to /login/mfa).

Options are WebAuthn's own JSON, for ``PublicKeyCredential.parseCreationOptionsFromJSON`` /
``parseRequestOptionsFromJSON``; the ceremonies take the credential's ``toJSON()``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response

from ..services import mfa, passkeys
from ..tokens.flask import authenticated
from .body import parse_body, request_client, require_body
from .openapi import documented
from .responses import json_response, token_response
from .schemas import TokenResponse
from .schemas_webauthn import (
    CreationOptions,
    LoginOptionsRequest,
    MfaOptionsRequest,
    PasskeyCredential,
    PasskeyOptionsRequest,
    PasskeyOut,
    RequestOptions,
)

bp = Blueprint("webauthn", __name__)

_BODY_ERRORS = (400, 413, 415)


@bp.post("/webauthn/register/options")
@documented(
    body=PasskeyOptionsRequest,
    ok=(200, CreationOptions),
    errors=(*_BODY_ERRORS, 401, 409, 429, 503),
    auth="bearer",
    tag="webauthn",
)
def register_options() -> Response:
    """Start adding a passkey: the creation options (a discoverable credential, user
    verification required, the caller's passkeys excluded). Needs the current password; at
    most 10 passkeys (409 `too_many_passkeys`)."""
    caller = authenticated()
    body = require_body(PasskeyOptionsRequest)
    return _options(passkeys.registration_options(caller, body.current_password))


@bp.post("/webauthn/register")
@documented(
    body=PasskeyCredential,
    ok=(201, PasskeyOut),
    errors=(*_BODY_ERRORS, 401, 409, 429, 503),
    auth="bearer",
    tag="webauthn",
)
def register() -> Response:
    """Finish adding a passkey: the new credential's `toJSON()`. Active at once; a first
    factor logs out the caller's other password-only sessions and comes with the account's
    `recovery_codes`, shown this once. A credential that does not
    verify is 400 `invalid_credential`."""
    caller = authenticated()
    body = require_body(PasskeyCredential)
    factor_id, codes = passkeys.register(caller, body.as_json())
    out = PasskeyOut(id=str(factor_id), recovery_codes=codes)
    return json_response(out, 201, exclude_none=True, no_store=True)


@bp.post("/webauthn/login/options")
@documented(
    body=LoginOptionsRequest,
    optional_body=True,
    ok=(200, RequestOptions),
    errors=(*_BODY_ERRORS, 429, 503),
    tag="webauthn",
)
def login_options() -> Response:
    """Start a passwordless login: request options for a discoverable credential (empty
    `allowCredentials`), user verification required."""
    parse_body(LoginOptionsRequest, optional=True)
    return _options(passkeys.login_options())


@bp.post("/webauthn/login")
@documented(
    body=PasskeyCredential,
    ok=(200, TokenResponse),
    errors=(*_BODY_ERRORS, 401, 429, 503),
    tag="webauthn",
)
def login() -> Response:
    """Log in with a passkey alone: the assertion's `toJSON()`. A pair at `aal2`, `amr`
    `["hwk"]` (a device-bound key) or `["swk"]` (a synced one). Any failure is 401
    `invalid_credentials`."""
    body = require_body(PasskeyCredential)
    return token_response(passkeys.login(body.as_json(), request_client()))


@bp.post("/webauthn/mfa/options")
@documented(
    body=MfaOptionsRequest,
    ok=(200, RequestOptions),
    errors=(*_BODY_ERRORS, 401, 409, 429, 503),
    tag="webauthn",
)
def mfa_options() -> Response:
    """A passkey as the second factor: request options naming the user's passkeys, for the
    `mfa_token` of a 403 `mfa_required` (each call is one of its attempts). The assertion
    goes to `/login/mfa` as `{"mfa_token", "credential"}`."""
    body = require_body(MfaOptionsRequest)
    user_id = mfa.mfa_token_user(body.mfa_token)
    return _options(passkeys.second_factor_options(user_id))


def _options(options: dict[str, Any]) -> Response:
    response = Response(json.dumps(options), mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"  # a challenge, single use
    return response
