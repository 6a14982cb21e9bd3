"""Every statement on the ``sessions`` table (a session is one login: the family of refresh
tokens that rotate from it, named by ``(id, generation)``).

Functions taking no connection run on the request's ORM session, inside the caller's
transaction (``write_transaction()``); the two hot statements are ``DirectStatement``s.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, exists, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from ..extensions import db
from ..models import AuditEvent, Session, User, utcnow
from .database import single_statement, write_transaction
from .direct import DirectStatement

_PRINCIPAL_COLUMNS = (
    User.id,
    User.username,
    User.roles,
    User.created_at,
    User.disabled_at,
    User.email,
    User.email_verified_at,
    Session.revoked_at,
    Session.expires_at,
)
_SELECT_PRINCIPAL = (
    select(*_PRINCIPAL_COLUMNS)
    .join_from(Session, User, Session.user_id == User.id)
    .where(Session.id == bindparam("sid", type_=Session.id.type))
)
# The token check: the session named by `sid` and its user, in one read outside any transaction.
PRINCIPAL = DirectStatement(_SELECT_PRINCIPAL)
# Where revoke() leaves what a transaction revoked, for the after_commit hook that announces it
# to every process's session-state cache (authsvc.runtime, authsvc.tokens.session_states).
REVOKED_PENDING_KEY = "authsvc.revoked"


def principal_row(sid: uuid.UUID) -> Any:
    """The token check's row: the session and its user (None: no such session)."""
    return PRINCIPAL.first({"sid": sid})


_SELECT_PRINCIPAL_WITH_ASSURANCE = _SELECT_PRINCIPAL.add_columns(Session.aal)


def principal_row_now(sid: uuid.UUID) -> Any:
    """``principal_row`` read from the database now, never a cache, with the session's
    assurance level: what an admin request is checked against (DESIGN §11)."""
    with single_statement() as connection:
        return connection.execute(_SELECT_PRINCIPAL_WITH_ASSURANCE, {"sid": sid}).first()


def _user_column(column: Any) -> Any:
    # RETURNING may name only the updated table on SQLite: the user's fields come by subquery.
    return select(column).where(User.id == Session.user_id).scalar_subquery()


# The rotation of a refresh token's current generation. Its conditions are the whole revocation
# check (session live, still this user's, user active), and it returns the user's fields for the
# response. Built once: constructing the statement cost more than running it.
ROTATE = DirectStatement(
    update(Session)
    .where(
        Session.id == bindparam("session_id"),
        Session.user_id == bindparam("owner_id"),
        Session.generation == bindparam("generation"),
        Session.revoked_at.is_(None),
        Session.expires_at > bindparam("now"),
        exists().where(User.id == Session.user_id, User.disabled_at.is_(None)),
    )
    .values(
        generation=bindparam("next_generation"),
        rotated_at=bindparam("now"),
        last_used_at=bindparam("now"),
        user_agent=bindparam("user_agent"),
        ip=bindparam("ip"),
    )
    .returning(
        Session.id,
        Session.generation,
        Session.expires_at,
        Session.amr,
        Session.aal,
        Session.auth_time,
        Session.user_id,
        _user_column(User.username).label("username"),
        _user_column(User.roles).label("roles"),
        _user_column(User.created_at).label("user_created_at"),
        _user_column(User.email).label("email"),
        _user_column(User.email_verified_at).label("email_verified_at"),
    )
)


def rotate(
    session_id: uuid.UUID,
    owner_id: uuid.UUID,
    generation: int,
    now: datetime,
    user_agent: str | None,
    ip: str | None,
) -> Any:
    """Bump a live session from ``generation`` to the next, in one statement; the session and
    user row, or None if it did not match (not current, dead, or not this user's)."""
    return ROTATE.first(
        {
            "session_id": session_id,
            "owner_id": owner_id,
            "generation": generation,
            "next_generation": generation + 1,
            "now": now,
            "user_agent": user_agent,
            "ip": ip,
        },
        writes=True,
    )


_INSERT = insert(Session)
_SESSION_COLUMNS = (
    "id",
    "user_id",
    "generation",
    "created_at",
    "rotated_at",
    "last_used_at",
    "expires_at",
    "user_agent",
    "ip",
    "amr",
    "aal",
    "auth_time",
)


# A login's session, inserted only while the password it checked is still the user's (its
# ``password_version``) and the user is active: a password change, reset or disable that
# commits while the login hashes leaves it nothing to insert. FOR SHARE (PostgreSQL; SQLite has
# one writer at a time) makes the insert wait for a change in flight, then re-read the row, and
# makes a change wait for it. A password-only login also needs the account to have gained no
# factor since it read it (``factor_version``): the re-read row says so, where a subquery on
# factors would still answer from the statement's older snapshot.
def _insert_if_current(*conditions: ColumnElement[bool]) -> Any:
    return (
        insert(Session)
        .from_select(
            list(_SESSION_COLUMNS),
            select(
                *(
                    bindparam(name, type_=Session.__table__.c[name].type)
                    for name in _SESSION_COLUMNS
                )
            )
            .select_from(User)
            .where(
                User.id == bindparam("user_id"),
                User.password_version == bindparam("checked_version"),
                User.disabled_at.is_(None),
                *conditions,
            )
            .with_for_update(read=True),
        )
        .execution_options(preserve_rowcount=True)
    )  # SQLAlchemy keeps rowcount for UPDATE/DELETE only


_INSERT_IF_CREDENTIALS_CURRENT = _insert_if_current()
_INSERT_IF_PASSWORD_ONLY_CURRENT = _insert_if_current(
    User.factor_version == bindparam("checked_factor_version")
)


# A password-only login's session and its audit row in one statement on PostgreSQL: the
# session INSERT is a CTE whose RETURNING feeds the audit INSERT, so the row exists exactly when
# the session does, in one round trip (a transaction of two would take four).
_EVENT_COLUMNS = ("id", "type", "at", "user_id", "actor_id", "ip", "request_id", "detail")
_NEW_SESSION = _INSERT_IF_PASSWORD_ONLY_CURRENT.returning(Session.id).cte("new_session")
_INSERT_LOGIN_WITH_EVENT = (
    insert(AuditEvent.__table__)
    .from_select(
        list(_EVENT_COLUMNS),
        select(
            *(
                bindparam(f"event_{name}", type_=AuditEvent.__table__.c[name].type)
                for name in _EVENT_COLUMNS
            )
        ).select_from(_NEW_SESSION),
    )
    .execution_options(preserve_rowcount=True)
)


def insert_login(
    values: dict[str, Any], checked_version: int, factor_version: int, event: dict[str, Any]
) -> bool:
    """A password-only login's session and its audit row ``event``, both or neither, if the
    credentials it checked are still current (``insert_if_credentials_current``); whether
    they were. PostgreSQL: one autocommit statement; SQLite: one short write transaction."""
    parameters = {
        **values,
        "checked_version": checked_version,
        "checked_factor_version": factor_version,
    }
    if db.session.get_bind().dialect.name == "postgresql":
        events = {f"event_{name}": value for name, value in event.items()}
        with single_statement(writes=True) as connection:
            result = connection.execute(_INSERT_LOGIN_WITH_EVENT, {**parameters, **events})
            return result.rowcount == 1
    with write_transaction():
        if (
            db.session.connection().execute(_INSERT_IF_PASSWORD_ONLY_CURRENT, parameters).rowcount
            != 1
        ):
            return False
        db.session.connection().execute(insert(AuditEvent.__table__), [event])
    return True


def insert_if_credentials_current(
    values: dict[str, Any], checked_version: int, factor_version: int | None = None
) -> bool:
    """In the caller's transaction, insert a login's session if the user's password is still
    the one the login verified (``checked_version``), the user is active and (a password-only
    login: ``factor_version``) no factor was added since it read the account; whether it was.
    Core, on the transaction's connection: given a dict of parameters, the ORM would take the
    INSERT ... SELECT for a bulk insert."""
    parameters = {**values, "checked_version": checked_version}
    statement = _INSERT_IF_CREDENTIALS_CURRENT
    if factor_version is not None:
        parameters["checked_factor_version"] = factor_version
        statement = _INSERT_IF_PASSWORD_ONLY_CURRENT
    return db.session.connection().execute(statement, parameters).rowcount == 1


def insert_in_transaction(values: dict[str, Any]) -> None:
    db.session.execute(_INSERT, values)


def add(session: Session) -> None:
    db.session.add(session)


def with_user_now(session_id: uuid.UUID) -> tuple[Session, User] | None:
    """The session and its user as they are now (not as the ORM remembers them)."""
    row = db.session.execute(
        select(Session, User)
        .join(User)
        .where(Session.id == session_id)
        .execution_options(populate_existing=True)
    ).first()
    return None if row is None else (row[0], row[1])


def revoke(
    *,
    reason: str,
    session_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    except_session_id: uuid.UUID | None = None,
    aal: str | None = None,
) -> int:
    """Revoke the live sessions that match every filter given; how many. What was revoked is
    announced once the caller's transaction commits (``REVOKED_PENDING_KEY``)."""
    where: list[ColumnElement[bool]] = [Session.revoked_at.is_(None)]
    if session_id is not None:
        where.append(Session.id == session_id)
    if user_id is not None:
        where.append(Session.user_id == user_id)
    if except_session_id is not None:
        where.append(Session.id != except_session_id)
    if aal is not None:
        where.append(Session.aal == aal)
    if len(where) == 1:
        raise ValueError("revoke() needs a session or a user")
    result = db.session.execute(
        update(Session)
        .where(*where)
        .values(revoked_at=utcnow(), revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    pending = db.session.info.setdefault(REVOKED_PENDING_KEY, [])
    # A user-wide revocation names the user, so caches drop every session of theirs at once.
    pending.append(("s", str(session_id)) if user_id is None else ("u", str(user_id)))
    return result.rowcount or 0


def assurance(session_id: uuid.UUID) -> str | None:
    """The session's assurance level (``aal1``/``aal2``), None for an unknown session."""
    return db.session.scalar(select(Session.aal).where(Session.id == session_id))


def raise_assurance(session_id: uuid.UUID, amr: list[str], aal: str, now: datetime) -> None:
    """The session's user just proved a second factor: its next tokens say so."""
    db.session.execute(
        update(Session)
        .where(Session.id == session_id, Session.revoked_at.is_(None))
        .values(amr=amr, aal=aal, auth_time=now)
        .execution_options(synchronize_session=False)
    )


def user_changed(user_id: uuid.UUID) -> None:
    """The user's fields changed (a verified address): once the caller's transaction commits,
    every process drops its cached rows of the user's sessions, as after a revocation, so the
    next token check reads the new fields."""
    db.session.info.setdefault(REVOKED_PENDING_KEY, []).append(("u", str(user_id)))


def owner_of(session_id: uuid.UUID) -> uuid.UUID | None:
    return db.session.scalar(select(Session.user_id).where(Session.id == session_id))


def owned(user_id: uuid.UUID, session_id: uuid.UUID) -> bool:
    found = db.session.scalar(
        select(Session.id).where(Session.id == session_id, Session.user_id == user_id)
    )
    return found is not None


def live_of_user(user_id: uuid.UUID) -> list[Session]:
    """The user's sessions that are neither revoked nor expired, newest first."""
    now = utcnow()
    return list(
        db.session.scalars(
            select(Session)
            .where(
                Session.user_id == user_id, Session.revoked_at.is_(None), Session.expires_at > now
            )
            .order_by(Session.created_at.desc())
        )
    )


def delete_dead(revoked_before: datetime) -> int:
    """Delete expired sessions and those revoked before ``revoked_before``; how many."""
    now = utcnow()
    return db.session.execute(
        delete(Session).where(or_(Session.expires_at <= now, Session.revoked_at <= revoked_before))
    ).rowcount
