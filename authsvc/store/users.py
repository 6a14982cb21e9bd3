"""Every statement on the ``users`` table. Names given here are already normalised."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, cast, exists, func, or_, select, update
from sqlalchemy import delete as delete_statement
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from ..extensions import db
from ..models import Factor, Session, User, utcnow
from .database import single_statement

# What a login reads: one statement, on a connection that is back in the pool before the
# password is hashed (no transaction or connection is held for the length of an argon2 run).
_LOGIN_ROW = select(
    User.id,
    User.username,
    User.password_hash,
    User.password_version,
    User.factor_version,
    User.roles,
    User.created_at,
    User.disabled_at,
    User.email,
    User.email_verified_at,
    # Whether the login needs a second step (DESIGN §10), in the same statement.
    exists().where(Factor.user_id == User.id, Factor.confirmed_at.is_not(None)).label("has_factor"),
).where(User.username == bindparam("name"))
_PASSWORD_ROW = select(
    User.id, User.username, User.password_hash, User.password_version, User.disabled_at
).where(User.id == bindparam("user_id"))


def login_row(username: str) -> Any:
    """The columns a login needs, in one autocommit statement; None for an unknown name."""
    if "\x00" in username:
        # No signup could have made this name (and PostgreSQL cannot even compare text holding
        # NUL): simply an unknown user.
        return None
    with single_statement() as connection:
        return connection.execute(_LOGIN_ROW, {"name": username}).first()


def password_row(user_id: uuid.UUID) -> Any:
    """The columns a password check needs, in one autocommit statement (no transaction is held
    while the caller hashes); None for an unknown id."""
    with single_statement() as connection:
        return connection.execute(_PASSWORD_ROW, {"user_id": user_id}).first()


def named(username: str) -> User | None:
    if "\x00" in username:
        return None  # as in login_row
    return db.session.scalar(select(User).where(User.username == username))


def get(user_id: uuid.UUID) -> User | None:
    """The user as it is now in the database, not as this ORM session remembers it."""
    return db.session.get(User, user_id, populate_existing=True)


def add(user: User) -> None:
    """Insert now (flush), so the unique index on the username decides within the caller's
    transaction: of many parallel signups for one name exactly one insert succeeds."""
    db.session.add(user)
    db.session.flush()


def _password_still_current(user_id: uuid.UUID, checked_version: int) -> list[Any]:
    """The user still has the password a caller verified (``checked_version``) and is active."""
    return [
        User.id == user_id,
        User.password_version == checked_version,
        User.disabled_at.is_(None),
    ]


def upgrade_password_hash(
    user_id: uuid.UUID, checked_version: int, new_hash: str, factor_version: int | None = None
) -> bool:
    """Store the same password under the current parameters, if the password a login verified
    is still the user's and the user is active (and, with ``factor_version``, no factor was
    added since); whether it was (the caller's transaction, which holds the row from here on).
    The version stays: a rehash is not a change."""
    where = _password_still_current(user_id, checked_version)
    if factor_version is not None:
        where.append(User.factor_version == factor_version)
    result = db.session.execute(update(User).where(*where).values(password_hash=new_hash))
    return result.rowcount == 1


def factor_added(user_id: uuid.UUID) -> None:
    """In the transaction that adds a factor: a password-only login that read the account
    before it now inserts no session (``store.sessions``' insert compares this version)."""
    db.session.execute(
        update(User).where(User.id == user_id).values(factor_version=User.factor_version + 1)
    )


def change_password_if_current(
    user_id: uuid.UUID, checked_version: int, new_hash: str, session_id: uuid.UUID
) -> bool:
    """A user's own change: only if the password verified is still the user's, the user
    active, and the session asking still live; whether it was."""
    session_live = exists().where(
        Session.id == session_id,
        Session.user_id == User.id,
        Session.revoked_at.is_(None),
        Session.expires_at > utcnow(),
    )
    result = db.session.execute(
        update(User)
        .where(*_password_still_current(user_id, checked_version), session_live)
        .values(password_hash=new_hash, password_version=User.password_version + 1)
    )
    return result.rowcount == 1


def set_password_hash(user_id: uuid.UUID, password_hash: str) -> None:
    """A new password (an operator's reset): the version moves on, voiding logins in flight."""
    db.session.execute(
        update(User)
        .where(User.id == user_id)
        .values(password_hash=password_hash, password_version=User.password_version + 1)
    )


def disable(user_id: uuid.UUID) -> None:
    db.session.execute(
        update(User)
        .where(User.id == user_id, User.disabled_at.is_(None))
        .values(disabled_at=utcnow())
    )


def all_by_creation() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.created_at)))


# The unique constraint on users.email_key (migration 0005).
EMAIL_KEY_CONSTRAINT = "uq_users_email_key"


def email_was_taken(error: IntegrityError) -> bool:
    """Whether a failed insert or update of a user hit the address's unique index (else the
    username's): the constraint psycopg names, or the column sqlite3's message names."""
    diagnostics = getattr(error.orig, "diag", None)
    if diagnostics is not None:
        return diagnostics.constraint_name == EMAIL_KEY_CONSTRAINT
    return "users.email_key" in str(error.orig)


def lock(user_id: uuid.UUID) -> None:
    """Hold the user's row until the caller's transaction ends (FOR UPDATE; SQLite's write
    transaction holds the whole database already)."""
    db.session.execute(select(User.id).where(User.id == user_id).with_for_update())


def with_email(email_key: str) -> User | None:
    """The user holding the address with this key (``security.emails``), or None."""
    return db.session.scalar(
        select(User).where(User.email_key == email_key).execution_options(populate_existing=True)
    )


def mark_email_verified(user_id: uuid.UUID, email: str, now: datetime) -> bool:
    """Verified, if ``email`` is still the user's address; whether it was."""
    result = db.session.execute(
        update(User)
        .where(User.id == user_id, User.email == email)
        .values(email_verified_at=func.coalesce(User.email_verified_at, now))
    )
    return result.rowcount == 1


def change_email(user_id: uuid.UUID, email: str, email_key: str, now: datetime) -> None:
    """The new, proven address (flushed: the unique index on the key decides here)."""
    db.session.execute(
        update(User)
        .where(User.id == user_id)
        .values(email=email, email_key=email_key, email_verified_at=now)
    )


# --- administration (DESIGN §11) ----------------------------------------------------------


def page(
    *, limit: int, after: tuple[datetime, uuid.UUID] | None = None, prefix: str | None = None
) -> list[User]:
    """Up to ``limit`` users in creation order, strictly after the position ``after`` (the last
    of the previous page; a keyset: users created meanwhile come after every existing one, so
    none is listed twice or skipped). ``prefix``: the username's or the address key's start."""
    query = select(User)
    if prefix:
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(User.username.like(pattern, escape="\\"), User.email_key.like(pattern, escape="\\"))
        )
    if after is not None:
        created_at, user_id = after
        query = query.where(
            or_(
                User.created_at > created_at, and_(User.created_at == created_at, User.id > user_id)
            )
        )
    query = query.order_by(User.created_at, User.id).limit(limit)
    return list(db.session.scalars(query.execution_options(populate_existing=True)))


def _holds(role: str) -> ColumnElement[bool]:
    """The user's roles (a JSON array) contain ``role``."""
    if db.session.get_bind().dialect.name == "postgresql":
        return cast(User.roles, JSONB).contains([role])
    each = func.json_each(User.roles).table_valued("value")
    return exists(select(1).select_from(each).where(each.c.value == role))


# pg_advisory_xact_lock's key for changes to who holds the admin role ("admn").
_ADMIN_ROLE_LOCK = 0x61646D6E


def lock_role_changes() -> None:
    """Until the caller's transaction ends, no other transaction changes who is an active
    admin (a demotion, a disable or a deletion takes this first): two parallel demotions of
    the last two admins are decided one after the other, each seeing the other's outcome.
    SQLite's write transaction holds the whole database already."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(select(func.pg_advisory_xact_lock(_ADMIN_ROLE_LOCK)))


def count_active_holders(role: str, *, excluding: uuid.UUID) -> int:
    """Active users other than ``excluding`` who hold ``role``, read now."""
    return (
        db.session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.id != excluding, User.disabled_at.is_(None), _holds(role))
        )
        or 0
    )


def set_roles(user_id: uuid.UUID, roles: list[str]) -> None:
    db.session.execute(update(User).where(User.id == user_id).values(roles=roles))


def enable(user_id: uuid.UUID) -> None:
    db.session.execute(update(User).where(User.id == user_id).values(disabled_at=None))


def delete(user_id: uuid.UUID) -> int:
    """The user's row; their sessions, factors, codes, challenges and one-time tokens go with it
    (ON DELETE CASCADE)."""
    return db.session.execute(delete_statement(User).where(User.id == user_id)).rowcount or 0
