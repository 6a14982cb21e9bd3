"""Tables, and the value types that travel between layers (Caller, Principal, TokenPair, ...).

Plain data: no HTTP, no commits, no queries (those are in ``authsvc.store``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db


def utcnow() -> datetime:
    return datetime.now(UTC)


class UserLike(Protocol):
    """A User row, or any lighter view of one with these fields (Caller)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def username(self) -> str: ...
    @property
    def roles(self) -> list[str]: ...
    @property
    def created_at(self) -> datetime: ...


class SessionLike(Protocol):
    """A Session row, or a lighter view of one (a RETURNING row) with these fields."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def generation(self) -> int: ...
    @property
    def expires_at(self) -> datetime: ...


LogoutScope = Literal["local", "global", "others"]


@dataclass(frozen=True, slots=True)
class Caller:
    """The user behind a live token: the columns the checks and the views need, not an ORM row.

    Read on every authenticated request by one Core query (``store.sessions.PRINCIPAL``);
    services that change the user load it themselves by ``id``.
    """

    id: uuid.UUID
    username: str
    roles: list[str]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token names, and whether its session still lets it in."""

    caller: Caller
    live: bool  # session neither revoked nor expired, user active and named by `sub`, not denied


@dataclass(frozen=True)
class Client:
    """Who is calling, as the view saw it; stored on the session for GET /sessions."""

    user_agent: str | None
    ip: str | None


@dataclass(frozen=True)
class AccessContext:
    """What a verified, live access (or refresh) token says about the caller."""

    user: Caller
    session_id: uuid.UUID
    jti: str
    token_type: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_at: datetime


@dataclass(frozen=True)
class AuthResult:
    user: UserLike
    tokens: TokenPair


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # Normalised form (NFKC, case-folded, trimmed); the unique index is what enforces uniqueness.
    username: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    # Bumped by every password change or reset (not by a rehash under new parameters): a login
    # creates its session only while the version it verified is still current.
    password_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    sessions: Mapped[list[Session]] = relationship(back_populates="user", passive_deletes=True)

    @property
    def is_active(self) -> bool:
        return self.disabled_at is None


class Session(db.Model):
    """One login: the family of refresh tokens that rotate from it, named by (id, generation)."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the current generation was issued; the grace window for the previous one runs from it.
    rotated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    ip: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship(back_populates="sessions")


class SigningKey(db.Model):
    """A signing key pair. The private part is encrypted with a key derived from the secret."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    # "next" (published, not signing), "active" (signing), "retired" (verifying only).
    state: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, str]] = mapped_column(JSON)
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    # The HMAC secret that signs refresh tokens (kid "hs.<kid>"), encrypted like the private key.
    # Empty only for keys made before migration 0003 until a process fills it in.
    hmac_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # At most one active and one next key: two replicas bootstrapping or rotating at the
        # same moment collide here instead of both creating a key.
        Index(
            "uq_signing_keys_one_active",
            "state",
            unique=True,
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
        Index(
            "uq_signing_keys_one_next",
            "state",
            unique=True,
            sqlite_where=text("state = 'next'"),
            postgresql_where=text("state = 'next'"),
        ),
    )
