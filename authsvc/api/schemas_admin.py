"""pydantic models of the admin API and the self-service export (DESIGN §11)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .schemas import FactorOut, StrictModel, UserOut

_MAX_FIELD = 1024
_MAX_ROLES = 32


class QueryModel(BaseModel):
    """A query string: every value arrives as text, so numbers, ids and times are converted
    (lax), but unknown parameters are still refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class UsersQuery(QueryModel):
    q: str | None = Field(
        default=None, max_length=320, description="the start of a username or e-mail address"
    )
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=200)


class EventsQuery(QueryModel):
    user_id: uuid.UUID | None = None
    type: str | None = Field(default=None, max_length=48)
    since: datetime | None = Field(default=None, description="ISO 8601; without a zone: UTC")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=200)

    @field_validator("since")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        """As UTC (a time without a zone is UTC); one no UTC time can hold is refused."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("out of range") from None


class AdminUserCreate(StrictModel):
    username: str = Field(max_length=_MAX_FIELD, examples=["bob"])
    password: str | None = Field(
        default=None,
        max_length=_MAX_FIELD,
        description="omitted: nobody can log in with a password until a reset link sets one",
    )
    email: str | None = Field(default=None, max_length=_MAX_FIELD, description="counts as verified")
    roles: list[str] = Field(default_factory=list, max_length=_MAX_ROLES)


class AdminUserPatch(StrictModel):
    roles: list[str] | None = Field(
        default=None, max_length=_MAX_ROLES, description="the whole new list"
    )
    disabled: bool | None = None
    revoke_sessions: bool = Field(
        default=False, description="revoke every session now (a removed role then ends at once)"
    )


class AdminUserSummary(UserOut):
    disabled: bool


class AdminUserOut(AdminUserSummary):
    last_login_at: datetime | None
    factors: list[FactorOut] = Field(description="types and dates only: no secret")


class UserPage(BaseModel):
    users: list[AdminUserSummary]
    next_cursor: str | None


class AdminSessionOut(BaseModel):
    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip: str | None


class AdminSessionList(BaseModel):
    sessions: list[AdminSessionOut]


class EventOut(BaseModel):
    id: str
    type: str
    at: datetime
    user_id: str | None
    actor_id: str | None
    ip: str | None
    request_id: str | None
    detail: dict[str, Any]


class EventPage(BaseModel):
    events: list[EventOut]
    next_cursor: str | None


class AccountDeletion(StrictModel):
    current_password: str = Field(max_length=_MAX_FIELD)
    code: str | None = Field(
        default=None,
        max_length=_MAX_FIELD,
        description="a TOTP code or a recovery code: required when the account has a factor",
    )


class AccountExport(BaseModel):
    user: AdminUserSummary
    sessions: list[AdminSessionOut]
    factors: list[FactorOut]
    events: list[EventOut]


def event_out(row: Any) -> EventOut:
    return EventOut(
        id=str(row.id),
        type=row.type,
        at=row.at,
        user_id=str(row.user_id) if row.user_id else None,
        actor_id=row.actor_id,
        ip=row.ip,
        request_id=row.request_id,
        detail=dict(row.detail or {}),
    )


def factor_out(row: Any) -> FactorOut:
    return FactorOut(
        id=str(row.id), type=row.type, created_at=row.created_at, last_used_at=row.last_used_at
    )


def admin_session_out(session: Any, expires_at: datetime) -> AdminSessionOut:
    """A session as the admin API and the export show it (``expires_at``: when it dies if
    left alone, ``services.sessions.session_expires_at``)."""
    return AdminSessionOut(
        id=str(session.id),
        created_at=session.created_at,
        last_used_at=session.last_used_at,
        expires_at=expires_at,
        user_agent=session.user_agent,
        ip=session.ip,
    )
