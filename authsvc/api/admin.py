"""The admin API (DESIGN §11): users, their roles, sessions and factors, and the audit trail.

Every view calls ``admin_caller()`` first: who may call is settled before the body or the
query is read. Answers hold personal data: none may be cached (no-store).
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Response

from ..models import User
from ..services import admin
from ..services.sessions import session_expires_at
from ..tokens.flask import admin_caller
from .body import parse_query, require_body
from .openapi import documented
from .responses import json_response
from .schemas import user_out
from .schemas_admin import (
    AdminSessionList,
    AdminUserCreate,
    AdminUserOut,
    AdminUserPatch,
    AdminUserSummary,
    EventPage,
    EventsQuery,
    UserPage,
    UsersQuery,
    admin_session_out,
    event_out,
    factor_out,
)

bp = Blueprint("admin", __name__, url_prefix="/admin")

_CALLER_ERRORS = (401, 403, 503)
_BODY_ERRORS = (400, 413, 415)


def summary(user: User) -> AdminUserSummary:
    return AdminUserSummary(**user_out(user).model_dump(), disabled=not user.is_active)


def detail(found: admin.UserDetail) -> AdminUserOut:
    return AdminUserOut(
        **summary(found.user).model_dump(),
        last_login_at=found.last_login_at,
        factors=[factor_out(row) for row in found.factors],
    )


@bp.get("/users")
@documented(
    query=UsersQuery, ok=(200, UserPage), errors=(400, *_CALLER_ERRORS), auth="bearer", tag="admin"
)
def list_users() -> Response:
    """Users in creation order, filtered by a username or address prefix; cursor pages."""
    admin_caller()
    query = parse_query(UsersQuery)
    page = admin.list_users(query.q, query.limit, query.cursor)
    users = [summary(user) for user in page.items]
    return json_response(UserPage(users=users, next_cursor=page.next_cursor), no_store=True)


@bp.post("/users")
@documented(
    body=AdminUserCreate,
    ok=(201, AdminUserOut),
    errors=(*_BODY_ERRORS, *_CALLER_ERRORS, 409),
    auth="bearer",
    tag="admin",
)
def create_user() -> Response:
    """Create an account (an address given counts as verified); only roles the caller holds."""
    caller = admin_caller()
    body = require_body(AdminUserCreate)
    user = admin.create_user(body.username, body.password, body.roles, body.email, caller)
    return json_response(detail(admin.user_detail(user.id)), 201, no_store=True)


@bp.get("/users/<uuid:user_id>")
@documented(ok=(200, AdminUserOut), errors=(*_CALLER_ERRORS, 404), auth="bearer", tag="admin")
def get_user(user_id: uuid.UUID) -> Response:
    """A user, whether disabled, their last login and their factors (types and dates)."""
    admin_caller()
    return json_response(detail(admin.user_detail(user_id)), no_store=True)


@bp.patch("/users/<uuid:user_id>")
@documented(
    body=AdminUserPatch,
    ok=(200, AdminUserOut),
    errors=(*_BODY_ERRORS, *_CALLER_ERRORS, 404, 409),
    auth="bearer",
    tag="admin",
)
def update_user(user_id: uuid.UUID) -> Response:
    """Set the roles, disable or enable, revoke every session. Roles reach tokens at the
    next refresh; the last active admin cannot be demoted or disabled (409 last_admin)."""
    caller = admin_caller()
    body = require_body(AdminUserPatch)
    found = admin.update_user(
        user_id,
        roles=body.roles,
        disabled=body.disabled,
        revoke_sessions=body.revoke_sessions,
        actor=caller,
    )
    return json_response(detail(found), no_store=True)


@bp.delete("/users/<uuid:user_id>")
@documented(ok=(204, None), errors=(*_CALLER_ERRORS, 404, 409), auth="bearer", tag="admin")
def delete_user(user_id: uuid.UUID) -> Response:
    """Erase the account and everything that names it; its audit events keep the id."""
    admin_caller()
    admin.delete_user(user_id)
    return Response(status=204)


@bp.get("/users/<uuid:user_id>/sessions")
@documented(ok=(200, AdminSessionList), errors=(*_CALLER_ERRORS, 404), auth="bearer", tag="admin")
def list_sessions(user_id: uuid.UUID) -> Response:
    """The user's live sessions, newest first."""
    admin_caller()
    sessions = [
        admin_session_out(session, session_expires_at(session))
        for session in admin.user_sessions(user_id)
    ]
    return json_response(AdminSessionList(sessions=sessions), no_store=True)


@bp.delete("/users/<uuid:user_id>/sessions")
@documented(ok=(204, None), errors=(*_CALLER_ERRORS, 404), auth="bearer", tag="admin")
def revoke_sessions(user_id: uuid.UUID) -> Response:
    """Revoke every session of the user, at once."""
    admin_caller()
    admin.revoke_sessions(user_id)
    return Response(status=204)


@bp.delete("/users/<uuid:user_id>/sessions/<uuid:session_id>")
@documented(ok=(204, None), errors=(*_CALLER_ERRORS, 404), auth="bearer", tag="admin")
def revoke_session(user_id: uuid.UUID, session_id: uuid.UUID) -> Response:
    """Revoke one session of the user."""
    admin_caller()
    admin.revoke_sessions(user_id, session_id)
    return Response(status=204)


@bp.delete("/users/<uuid:user_id>/factors/<uuid:factor_id>")
@documented(ok=(204, None), errors=(*_CALLER_ERRORS, 404), auth="bearer", tag="admin")
def remove_factor(user_id: uuid.UUID, factor_id: uuid.UUID) -> Response:
    """Remove a factor (a lost device); the last one takes the recovery codes with it."""
    admin_caller()
    admin.remove_factor(user_id, factor_id)
    return Response(status=204)


@bp.get("/events")
@documented(
    query=EventsQuery,
    ok=(200, EventPage),
    errors=(400, *_CALLER_ERRORS),
    auth="bearer",
    tag="admin",
)
def list_events() -> Response:
    """Audit events, newest first, by user, type and time; cursor pages."""
    admin_caller()
    query = parse_query(EventsQuery)
    since = query.since  # in UTC (EventsQuery)
    page = admin.list_events(
        limit=query.limit,
        cursor=query.cursor,
        user_id=query.user_id,
        types=[query.type] if query.type else [],
        since=since,
    )
    events = [event_out(row) for row in page.items]
    return json_response(EventPage(events=events, next_cursor=page.next_cursor), no_store=True)
