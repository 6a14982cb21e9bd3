"""Every statement on the ``users`` table. Names given here are already normalised."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import bindparam, select, update

from ..extensions import db
from ..models import User, utcnow
from .database import single_statement

# What a login reads: one statement, on a connection that is back in the pool before the
# password is hashed (no transaction or connection is held for the length of an argon2 run).
_LOGIN_ROW = select(
    User.id, User.username, User.password_hash, User.roles, User.created_at, User.disabled_at
).where(User.username == bindparam("name"))


def login_row(username: str) -> Any:
    """The columns a login needs, in one autocommit statement; None for an unknown name."""
    if "\x00" in username:
        # No signup could have made this name (and PostgreSQL cannot even compare text holding
        # NUL): simply an unknown user.
        return None
    with single_statement() as connection:
        return connection.execute(_LOGIN_ROW, {"name": username}).first()


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


def upgrade_password_hash(user_id: uuid.UUID, checked_hash: str, new_hash: str) -> bool:
    """Replace the hash a login just verified (its parameters are outdated), if it is still the
    user's and the user is active; whether it was (the caller's transaction, which holds the
    row from here on)."""
    result = db.session.execute(
        update(User)
        .where(User.id == user_id, User.password_hash == checked_hash, User.disabled_at.is_(None))
        .values(password_hash=new_hash)
    )
    return result.rowcount == 1


def set_password_hash(user_id: uuid.UUID, password_hash: str) -> None:
    db.session.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))


def disable(user_id: uuid.UUID) -> None:
    db.session.execute(
        update(User)
        .where(User.id == user_id, User.disabled_at.is_(None))
        .values(disabled_at=utcnow())
    )


def all_by_creation() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.created_at)))
