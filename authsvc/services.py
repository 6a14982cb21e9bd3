"""Account and session operations: plain arguments in, domain errors out; each owns its transaction.

Nothing here touches ``request``. Password hashing always happens outside a transaction, so a
database connection (and SQLite's write lock) is never held for the length of an argon2 run.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import usernames
from .database import DirectStatement, single_statement, write_transaction
from .errors import InvalidCredentials, InvalidRequest, NotFound, TokenRevoked, UsernameTaken
from .extensions import db
from .models import Session, User, UserLike, utcnow
from .observability import security_event
from .runtime import runtime
from .tokens import Caller, TokenPair, issue_pair

LogoutScope = Literal["local", "global", "others"]


@dataclass(frozen=True)
class Client:
    """Who is calling, as the view saw it; stored on the session for GET /sessions."""

    user_agent: str | None
    ip: str | None


@dataclass(frozen=True)
class AuthResult:
    user: UserLike
    tokens: TokenPair


@dataclass(frozen=True)
class AccessContext:
    """What a verified access (or refresh) token says about the caller."""

    user: Caller
    session_id: uuid.UUID
    jti: str
    token_type: str
    expires_at: datetime


def _session_values(user_id: uuid.UUID, client: Client) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": uuid.uuid4(),
        "user_id": user_id,
        "generation": 0,
        "created_at": now,
        "rotated_at": now,
        "last_used_at": now,
        "expires_at": now + timedelta(seconds=runtime().settings.session_max_age),
        "user_agent": client.user_agent,
        "ip": client.ip,
    }


def _new_session(user: User, client: Client) -> Session:
    session = Session(**_session_values(user.id, client))
    db.session.add(session)
    return session


def _revoke_sessions(where: list, reason: str) -> int:
    result = db.session.execute(
        update(Session)
        .where(Session.revoked_at.is_(None), *where)
        .values(revoked_at=utcnow(), revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def _user_named(username: str) -> User | None:
    normalized = usernames.normalize(username)
    if "\x00" in normalized:
        # No signup could have made this name (and PostgreSQL cannot even compare text holding
        # NUL): simply an unknown user.
        return None
    return db.session.scalar(select(User).where(User.username == normalized))


def signup(username: str, password: str, client: Client) -> AuthResult:
    rt = runtime()
    normalized = usernames.validate(username)
    checked = rt.password_policy.check(password, username=normalized)
    password_hash = rt.hasher.hash(checked)
    try:
        with write_transaction():
            user = User(id=uuid.uuid4(), username=normalized, password_hash=password_hash, roles=[])
            db.session.add(user)
            # The unique index on the normalised username decides, not a prior lookup: of many
            # parallel signups for one name exactly one insert succeeds.
            db.session.flush()
            session = _new_session(user, client)
    except IntegrityError:
        raise UsernameTaken() from None
    security_event("signup", user_id=str(user.id), session_id=str(session.id))
    return AuthResult(user, issue_pair(user, session, fresh=True))


# What a login reads: one statement, on a connection that is back in the pool before the
# password is hashed (no transaction or connection is held for the length of an argon2 run).
_LOGIN_USER = select(
    User.id, User.username, User.password_hash, User.roles, User.created_at, User.disabled_at
).where(User.username == bindparam("name"))
_INSERT_SESSION = insert(Session)


def login(username: str, password: str, client: Client) -> AuthResult:
    rt = runtime()
    if len(username) > usernames.MAX_LENGTH or len(password) > rt.settings.password_max_length:
        raise InvalidRequest("The username or password is too long.")
    normalized = usernames.normalize(username)
    user = None
    # No signup could have made a name holding NUL (and PostgreSQL cannot even compare text
    # holding NUL): simply an unknown user.
    if "\x00" not in normalized:
        with single_statement() as connection:
            user = connection.execute(_LOGIN_USER, {"name": normalized}).first()
    if user is None:
        # Same work, same answer as a wrong password: no way to tell which usernames exist.
        rt.hasher.dummy_verify(password)
        security_event("login_failed", user_id=None, reason="unknown_user")
        raise InvalidCredentials()
    ok, new_hash = rt.hasher.verify_and_update(password, user.password_hash)
    if not ok or user.disabled_at is not None:
        security_event(
            "login_failed", user_id=str(user.id), reason="disabled" if ok else "wrong_password"
        )
        raise InvalidCredentials()
    values = _session_values(user.id, client)
    if new_hash is None:
        with single_statement(writes=True) as connection:
            connection.execute(_INSERT_SESSION, values)
    else:
        with write_transaction():
            # The hash parameters changed (or a legacy scheme): upgrade while we hold the password.
            db.session.execute(
                update(User).where(User.id == user.id).values(password_hash=new_hash)
            )
            db.session.execute(_INSERT_SESSION, values)
    session = Session(**values)  # not added to the ORM session: it is written already
    caller = Caller(
        id=user.id, username=user.username, roles=list(user.roles or []), created_at=user.created_at
    )
    security_event("login", user_id=str(user.id), session_id=str(session.id))
    return AuthResult(caller, issue_pair(caller, session, fresh=True))


def _user_column(column: Any) -> Any:
    # RETURNING may name only the updated table on SQLite: the user's fields come by subquery.
    return select(column).where(User.id == Session.user_id).scalar_subquery()


# Built once: constructing the statement cost more than running it.
_ROTATE = DirectStatement(
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
        Session.user_id,
        _user_column(User.username).label("username"),
        _user_column(User.roles).label("roles"),
        _user_column(User.created_at).label("user_created_at"),
    )
)


def refresh(
    session_id: uuid.UUID, generation: int, user_id: uuid.UUID, client: Client
) -> AuthResult:
    """Rotate the session named by a verified refresh token (DESIGN §3, rotation and reuse).

    Current generation: bump it with one conditional UPDATE (of N concurrent callers exactly one
    matches). Previous generation within the grace window: re-issue for the current one. Anything
    else is reuse of a stolen or replayed token: the whole session is revoked.

    The common case is that one statement and nothing else: the UPDATE's conditions are the
    whole revocation check (session live, still this user's, user active) and it returns the
    user's fields for the response. Everything else takes a transaction that reads the session
    and decides.
    """
    now = utcnow()
    rotated = _ROTATE.first(
        {
            "session_id": session_id,
            "owner_id": user_id,
            "generation": generation,
            "next_generation": generation + 1,
            "now": now,
            "user_agent": client.user_agent,
            "ip": client.ip,
        },
        writes=True,
    )
    if rotated is not None:
        caller = Caller(
            id=rotated.user_id,
            username=rotated.username,
            roles=list(rotated.roles or []),
            created_at=rotated.user_created_at,
        )
        return AuthResult(caller, issue_pair(caller, rotated, fresh=False))
    return _refresh_not_current(session_id, generation, user_id, client)


def _refresh_not_current(
    session_id: uuid.UUID, generation: int, user_id: uuid.UUID, client: Client
) -> AuthResult:
    """The refresh token is not the session's current generation, or the session is dead."""
    settings = runtime().settings
    now = utcnow()
    reuse_detected = False
    with write_transaction():
        row = db.session.execute(
            select(Session, User)
            .join(User)
            .where(Session.id == session_id)
            .execution_options(populate_existing=True)
        ).first()
        if row is None:
            raise TokenRevoked()
        session, user = row
        dead = session.revoked_at is not None or session.expires_at <= now or not user.is_active
        if dead or session.user_id != user_id:
            raise TokenRevoked()
        in_grace = now - session.rotated_at <= timedelta(seconds=settings.refresh_reuse_grace)
        if generation == session.generation - 1 and in_grace:
            pass  # a concurrent tab or a lost response: same generation again, no bump.
        else:
            # Older than the previous generation, or the previous one after the grace window
            # (the generation only grows, so it cannot have become current since the UPDATE).
            reuse_detected = True
            _revoke_sessions([Session.id == session_id], "reuse_detected")
    if reuse_detected:
        security_event(
            "refresh_reuse_detected",
            user_id=str(user.id),
            session_id=str(session_id),
            presented_generation=generation,
            current_generation=session.generation,
        )
        raise TokenRevoked("The refresh token was already used; the session has been revoked.")
    return AuthResult(user, issue_pair(user, session, fresh=False))


def logout(context: AccessContext, scope: LogoutScope) -> None:
    rt = runtime()
    user_id = context.user.id
    with write_transaction():
        if scope == "local":
            where = [Session.id == context.session_id]
        elif scope == "global":
            where = [Session.user_id == user_id]
        else:
            where = [Session.user_id == user_id, Session.id != context.session_id]
        count = _revoke_sessions(where, f"logout_{scope}")
        deny = scope != "others" and context.token_type == "access"  # noqa: S105
        if deny and not rt.settings.redis_url:
            rt.denylist.add(context.jti, _deny_until(context.expires_at))
    # Redis after the database commit: the session row is the authority, the denylist a second
    # line; a Redis failure here surfaces as 503 with the session already revoked.
    if deny and rt.settings.redis_url:
        rt.denylist.add(context.jti, _deny_until(context.expires_at))
    security_event("sessions_revoked", user_id=str(user_id), scope=scope, count=count)


def _deny_until(expires_at: datetime) -> datetime:
    # Tokens are accepted up to `leeway` seconds past exp; keep the entry that long too.
    return expires_at + timedelta(seconds=runtime().settings.leeway)


def change_password(context: AccessContext, current_password: str, new_password: str) -> None:
    rt = runtime()
    user = db.session.get(User, context.user.id, populate_existing=True)
    if user is None:
        raise TokenRevoked()
    if len(current_password) > rt.settings.password_max_length:
        raise InvalidCredentials()
    ok, _ = rt.hasher.verify_and_update(current_password, user.password_hash)
    if not ok:
        security_event("password_change_failed", user_id=str(user.id))
        raise InvalidCredentials("The current password is incorrect.")
    checked = rt.password_policy.check(new_password, username=user.username)
    new_hash = rt.hasher.hash(checked)
    with write_transaction():
        db.session.execute(update(User).where(User.id == user.id).values(password_hash=new_hash))
        count = _revoke_sessions(
            [Session.user_id == user.id, Session.id != context.session_id], "password_changed"
        )
    security_event("password_changed", user_id=str(user.id), sessions_revoked=count)


def list_sessions(user_id: uuid.UUID) -> list[Session]:
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


def session_expires_at(session: Session) -> datetime:
    """When the session dies if left alone: its refresh token's expiry, capped by its max age."""
    idle_expiry = session.rotated_at + timedelta(seconds=runtime().settings.refresh_token_ttl)
    return min(idle_expiry, session.expires_at)


def revoke_session(user_id: uuid.UUID, session_id: uuid.UUID) -> None:
    with write_transaction():
        owned = db.session.scalar(
            select(Session.id).where(Session.id == session_id, Session.user_id == user_id)
        )
        if owned is None:
            # Someone else's session and a missing one look the same.
            raise NotFound("No such session.")
        count = _revoke_sessions([Session.id == session_id], "revoked_by_user")
    if count:
        security_event("sessions_revoked", user_id=str(user_id), scope="one", count=count)


# -- administration (the flask CLI) ------------------------------------------------------------


def find_user(username: str) -> User:
    user = _user_named(username)
    if user is None:
        raise NotFound(f"No user named {usernames.normalize(username)!r}.")
    return user


def create_user(username: str, password: str, roles: list[str]) -> User:
    rt = runtime()
    normalized = usernames.validate(username)
    password_hash = rt.hasher.hash(rt.password_policy.check(password, username=normalized))
    try:
        with write_transaction():
            user = User(
                id=uuid.uuid4(), username=normalized, password_hash=password_hash, roles=roles
            )
            db.session.add(user)
    except IntegrityError:
        raise UsernameTaken() from None
    security_event("user_created", user_id=str(user.id), roles=roles)
    return user


def disable_user(username: str) -> int:
    """Disable the account and revoke every session at once; the number revoked."""
    user = find_user(username)
    with write_transaction():
        db.session.execute(
            update(User)
            .where(User.id == user.id, User.disabled_at.is_(None))
            .values(disabled_at=utcnow())
        )
        count = _revoke_sessions([Session.user_id == user.id], "user_disabled")
    security_event("user_disabled", user_id=str(user.id), sessions_revoked=count)
    return count


def set_password(username: str, password: str) -> int:
    """An operator's reset: new password, every session revoked; the number revoked."""
    rt = runtime()
    user = find_user(username)
    new_hash = rt.hasher.hash(rt.password_policy.check(password, username=user.username))
    with write_transaction():
        db.session.execute(update(User).where(User.id == user.id).values(password_hash=new_hash))
        count = _revoke_sessions([Session.user_id == user.id], "password_reset")
    security_event("password_reset", user_id=str(user.id), sessions_revoked=count)
    return count


def list_users() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.created_at)))


def revoke_user_sessions(username: str) -> int:
    user = find_user(username)
    with write_transaction():
        count = _revoke_sessions([Session.user_id == user.id], "revoked_by_operator")
    security_event("sessions_revoked", user_id=str(user.id), scope="operator", count=count)
    return count


def revoke_session_by_id(session_id: uuid.UUID) -> int:
    with write_transaction():
        count = _revoke_sessions([Session.id == session_id], "revoked_by_operator")
    if count:
        security_event("sessions_revoked", session_id=str(session_id), scope="operator", count=1)
    return count


def authenticate_client(client_id: str, secret: str) -> bool:
    """An introspection client from AUTHSVC_INTROSPECTION_CLIENTS, compared in constant time."""
    expected = runtime().settings.introspection_clients.get(client_id)
    # Compare even for an unknown id, so timing does not reveal which ids exist.
    matches = hmac.compare_digest((expected or secret + "\x00").encode(), secret.encode())
    return expected is not None and matches
