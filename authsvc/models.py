"""Tables, and the value types that travel between layers (Caller, Principal, TokenPair, ...).

Plain data: no HTTP, no commits, no queries (those are in ``authsvc.store``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from sqlalchemy import (
    JSON,
    BigInteger,
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
    @property
    def email(self) -> str | None: ...
    @property
    def email_verified(self) -> bool: ...


class SessionLike(Protocol):
    """A Session row, or a lighter view of one (a RETURNING row) with these fields."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def generation(self) -> int: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def amr(self) -> list[str]: ...
    @property
    def aal(self) -> str: ...
    @property
    def auth_time(self) -> datetime: ...


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
    email: str | None
    email_verified: bool

    @classmethod
    def from_row(
        cls, row: Any, *, user_id_column: str = "id", created_column: str = "created_at"
    ) -> Caller:
        """From a Core row holding the user's columns (the token check's, a login's, a
        rotation's RETURNING, which names the user's id and creation time differently)."""
        return cls(
            id=getattr(row, user_id_column),
            username=row.username,
            roles=list(row.roles or []),
            created_at=getattr(row, created_column),
            email=row.email,
            email_verified=row.email is not None and row.email_verified_at is not None,
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token names, and whether its session still lets it in."""

    caller: Caller
    live: bool  # session neither revoked nor expired, user active and named by `sub`, not denied


@dataclass(frozen=True, slots=True)
class AdminCaller:
    """Who calls the admin API: an admin user at aal2, or an operator's `flask admin token`."""

    actor_id: str  # the user's id, or "operator:<name>" (audit rows name it)
    user_id: uuid.UUID | None  # None: an operator's token
    roles: frozenset[str] | None  # the roles it may grant; None: any (an operator's token)


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
    tokens: TokenPair | None  # None: a signup that must verify its address before logging in


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
    # Bumped whenever a second factor is added: a password-only login that checked the
    # account before that gets no session (it would outlive the revocation of aal1 sessions).
    factor_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The address as email-validator normalised it (domain lowercased, IDNA), shown and mailed;
    # `email_key` (the whole address case-folded) is what the unique index compares.
    email: Mapped[str | None] = mapped_column(String(320))
    email_key: Mapped[str | None] = mapped_column(String(320), unique=True)
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    sessions: Mapped[list[Session]] = relationship(back_populates="user", passive_deletes=True)

    @property
    def is_active(self) -> bool:
        return self.disabled_at is None

    @property
    def email_verified(self) -> bool:
        return self.email is not None and self.email_verified_at is not None


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
    # How the user proved who they are when the session began (DESIGN §10): RFC 8176 methods,
    # the assurance level, and when. Every token of the session carries them; a refresh keeps them.
    amr: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["pwd"])
    aal: Mapped[str] = mapped_column(String(8), default="aal1")
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

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


class OneTimeToken(db.Model):
    """A token mailed to a user (DESIGN §9): only its HMAC is kept, and it is spent once.

    ``spent_at`` is set by the one conditional UPDATE that uses it, or when a newer token of
    the same purpose, a password change or the token's own target changing voids it.
    """

    __tablename__ = "one_time_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # verify_email, reset_password or change_email
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The address the token proves: the one mailed (verification) or the new one (change).
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    spent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # used, superseded, password_changed, email_changed
    spent_reason: Mapped[str | None] = mapped_column(String(32))


class OutboxMessage(db.Model):
    """A message to send, written in the transaction that made its reason (a token, a change).

    The template's context (which holds the link, hence the token) is encrypted at rest like
    the signing keys and erased once the message is sent or can no longer be.
    """

    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    recipient: Mapped[str] = mapped_column(String(320))
    template: Mapped[str] = mapped_column(String(64))
    payload_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    # queued, sent, failed (5xx, or undeliverable before it expired)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A sender's claim: no other sender takes the row before this (a crashed sender's claim
    # runs out, so the message is still sent: at least once).
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Retrying stops here: the token the message carries is dead by then.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The server's reply code and a short reason, never the body.
    last_error: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)


class Factor(db.Model):
    """A second factor of a user (DESIGN §10): a TOTP secret, or a passkey.

    A TOTP factor is pending until a code confirms it (``confirmed_at``); only confirmed
    factors count at login. ``last_step`` is the last TOTP time step accepted, advanced only
    forward by one conditional UPDATE, so no code is accepted twice.
    """

    __tablename__ = "factors"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # totp or passkey
    type: Mapped[str] = mapped_column(String(16))
    # TOTP: the shared secret, AES-GCM under a key derived from AUTHSVC_SECRET_KEY, the
    # factor's id bound in (security/totp.py).
    secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    # Passkey: the credential id (base64url), its COSE public key, the authenticator's sign
    # counter, the transports the browser reported, and whether it is synced (multi_device).
    credential_id: Mapped[str | None] = mapped_column(String(1400), unique=True)
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    sign_count: Mapped[int | None] = mapped_column(BigInteger)
    transports: Mapped[list[str] | None] = mapped_column(JSON)
    device_type: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RecoveryCode(db.Model):
    """One of a user's single-use recovery codes: only an HMAC of it is kept (DESIGN §10)."""

    __tablename__ = "recovery_codes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Challenge(db.Model):
    """A short-lived, single-use proof in progress (DESIGN §10): the ``mfa_token`` a password
    step hands out (``mfa_login``, or ``mfa_enrol`` for a user whose role needs a factor they
    lack), or a WebAuthn ceremony's challenge (``webauthn_register``, ``webauthn_login``).

    Only a digest of the token or challenge is kept. ``attempts`` counts the codes tried with
    it (each taken by a conditional UPDATE before the code is checked); ``spent_at`` is set by
    the one conditional UPDATE that uses it.
    """

    __tablename__ = "challenges"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(32))
    # None for a passwordless login's challenge: nobody is named until the passkey answers.
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    # The password the step verified (users.password_version): a change since voids it.
    password_version: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    spent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(db.Model):
    """One security event or admin action (DESIGN §11), written in the action's transaction.

    ``user_id`` is whom it concerns, ``actor_id`` who acted (a user id, or ``operator:<name>``
    for a token from ``flask admin token``); neither is a foreign key, so the rows of a deleted
    user stay (the id only). ``detail`` holds reasons and counts, never a secret.
    """

    __tablename__ = "audit_events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    type: Mapped[str] = mapped_column(String(48))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actor_id: Mapped[str | None] = mapped_column(String(80))
    ip: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        Index("ix_audit_events_at_id", "at", "id"),
        Index("ix_audit_events_user_at", "user_id", "at", "id"),
        Index("ix_audit_events_type_at", "type", "at", "id"),
    )
