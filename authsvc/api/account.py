"""The caller's account: profile, password, sessions."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response

from ..services import accounts, self_service, sessions
from ..tokens.flask import authenticated
from .body import require_body
from .openapi import documented
from .responses import json_response
from .schemas import PasswordChange, SessionList, SessionOut, UserOut, user_out
from .schemas_admin import (
    AccountDeletion,
    AccountExport,
    AdminUserSummary,
    admin_session_out,
    event_out,
    factor_out,
)

bp = Blueprint("account", __name__)


@bp.get("/me")
@documented(ok=(200, UserOut), errors=(401, 503), auth="bearer", tag="account")
def me() -> Response:
    """The user the access token belongs to."""
    return json_response(user_out(authenticated().user))


@bp.post("/password")
@documented(
    body=PasswordChange,
    ok=(204, None),
    errors=(400, 401, 413, 415, 429, 503),
    auth="bearer",
    tag="account",
)
def change_password() -> Response:
    """Change the password; every other session of the user is revoked."""
    caller = authenticated()
    body = require_body(PasswordChange)
    accounts.change_password(caller, body.current_password, body.new_password)
    return Response(status=204)


@bp.get("/sessions")
@documented(ok=(200, SessionList), errors=(401, 503), auth="bearer", tag="account")
def list_sessions() -> Response:
    """The user's live sessions; `current` marks the one this token belongs to."""
    caller = authenticated()
    listed = [
        SessionOut(
            id=str(session.id),
            created_at=session.created_at,
            last_used_at=session.last_used_at,
            expires_at=sessions.session_expires_at(session),
            user_agent=session.user_agent,
            ip=session.ip,
            current=session.id == caller.session_id,
        )
        for session in sessions.list_sessions(caller.user.id)
    ]
    return json_response(SessionList(sessions=listed))


@bp.delete("/sessions/<uuid:session_id>")
@documented(ok=(204, None), errors=(401, 404, 503), auth="bearer", tag="account")
def revoke_session(session_id: uuid.UUID) -> Response:
    """Revoke one of the user's sessions (its refresh and access tokens stop working)."""
    sessions.revoke_session(authenticated().user.id, session_id)
    return Response(status=204)


@bp.delete("/me")
@documented(
    body=AccountDeletion,
    ok=(204, None),
    errors=(400, 401, 409, 413, 415, 429, 503),
    auth="bearer",
    tag="account",
)
def delete_me() -> Response:
    """Erase the account: the current password, and a code when it has a second factor.
    Sessions, factors and mailed links go with it; audit events keep the id only."""
    caller = authenticated()
    body = require_body(AccountDeletion)
    self_service.delete_account(caller, body.current_password, body.code)
    return Response(status=204)


@bp.get("/me/export")
@documented(ok=(200, AccountExport), errors=(401, 503), auth="bearer", tag="account")
def export_me() -> Response:
    """Everything the account holds, as JSON: the user, live sessions, factors, events."""
    data = self_service.export_account(authenticated())
    export = AccountExport(
        user=AdminUserSummary(**user_out(data.user).model_dump(), disabled=False),
        sessions=[
            admin_session_out(session, sessions.session_expires_at(session))
            for session in data.sessions
        ],
        factors=[factor_out(row) for row in data.factors],
        events=[event_out(row) for row in data.events],
    )
    return json_response(export, no_store=True)
