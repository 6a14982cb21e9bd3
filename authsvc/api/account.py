"""The caller's account: profile, password, sessions."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response
from flask_jwt_extended import current_user, jwt_required

from .. import services
from ..schemas import PasswordChange, SessionList, SessionOut, UserOut, user_out
from .common import access_context, documented, json_response, require_body

bp = Blueprint("account", __name__)


@bp.get("/me")
@documented(ok=(200, UserOut), errors=(401, 503), auth="bearer", tag="account")
@jwt_required()
def me() -> Response:
    """The user the access token belongs to."""
    return json_response(user_out(current_user))


@bp.post("/password")
@documented(
    body=PasswordChange,
    ok=(204, None),
    errors=(400, 401, 413, 415, 503),
    auth="bearer",
    tag="account",
)
@jwt_required()
def change_password() -> Response:
    """Change the password; every other session of the user is revoked."""
    context = access_context()
    body = require_body(PasswordChange)
    services.change_password(context, body.current_password, body.new_password)
    return Response(status=204)


@bp.get("/sessions")
@documented(ok=(200, SessionList), errors=(401, 503), auth="bearer", tag="account")
@jwt_required()
def list_sessions() -> Response:
    """The user's live sessions; `current` marks the one this token belongs to."""
    context = access_context()
    sessions = [
        SessionOut(
            id=str(session.id),
            created_at=session.created_at,
            last_used_at=session.last_used_at,
            expires_at=services.session_expires_at(session),
            user_agent=session.user_agent,
            ip=session.ip,
            current=session.id == context.session_id,
        )
        for session in services.list_sessions(context.user.id)
    ]
    return json_response(SessionList(sessions=sessions))


@bp.delete("/sessions/<uuid:session_id>")
@documented(ok=(204, None), errors=(401, 404, 503), auth="bearer", tag="account")
@jwt_required()
def revoke_session(session_id: uuid.UUID) -> Response:
    """Revoke one of the user's sessions (its refresh and access tokens stop working)."""
    services.revoke_session(access_context().user.id, session_id)
    return Response(status=204)
