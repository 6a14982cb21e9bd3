"""The per-app objects the services and token checks need, in one typed container under one
``app.extensions`` key: settings, password hasher and policy, key ring, Redis client,
verified-token cache, session-state cache, failed-guess counters, mail and factor secrets
and the outbox sender."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from flask import Flask, current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession

from .config import Settings
from .extensions import db
from .mail.backends import ConsoleBackend, MailBackend, SmtpBackend
from .mail.sender import OutboxSender
from .mail.templates import MailRenderer
from .security.attempts import FailureLimits
from .security.breached import BreachedPasswordChecker
from .security.keys import KeyPolicy, KeyRing
from .security.one_time import MailSecrets
from .security.passwords import PasswordHasher, PasswordPolicy
from .security.totp import FactorSecrets
from .store.outbox import QUEUED_PENDING_KEY
from .store.sessions import REVOKED_PENDING_KEY
from .tokens.cache import VerifiedTokens
from .tokens.session_states import SessionStates

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger("authsvc.runtime")
EXTENSION_KEY = "authsvc"
# Redis answers in well under a millisecond on a healthy network; waiting longer than this
# only delays the 503 that fail-closed gives anyway.
REDIS_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    hasher: PasswordHasher
    password_policy: PasswordPolicy
    keyring: KeyRing
    redis: Redis | None
    verified_tokens: VerifiedTokens
    session_states: SessionStates
    failures: FailureLimits
    mail_cooldowns: FailureLimits
    code_guesses: FailureLimits
    mail_secrets: MailSecrets
    factor_secrets: FactorSecrets
    outbox: OutboxSender


def register_runtime(app: Flask, settings: Settings) -> Runtime:
    built = build_runtime(settings)
    app.extensions[EXTENSION_KEY] = built
    _install_commit_hooks()
    app.before_request(_start_outbox_sender)
    if built.outbox.backend is None:
        log.warning(
            "AUTHSVC_SMTP_URL is not set: e-mail (verification, reset, change) is queued in "
            "the outbox and not sent until a mail server is configured"
        )
    return built


def _start_outbox_sender() -> None:
    outbox = runtime().outbox
    if not outbox.started_here():
        outbox.ensure_started(current_app._get_current_object())  # type: ignore[attr-defined]


def _install_commit_hooks() -> None:
    """After a commit, announce the sessions it revoked (``store.sessions.revoke`` noted them on
    the ORM session) to every process's session-state cache, and wake the outbox sender if it
    queued mail; after a rollback, forget both. ``db`` is one object for every app, so the
    hooks are installed once and find the app's runtime when they run."""
    if event.contains(db.session, "after_commit", _after_commit):
        return
    event.listen(db.session, "after_commit", _after_commit)
    event.listen(db.session, "after_rollback", _after_rollback)


def _after_commit(orm_session: OrmSession) -> None:
    revoked = orm_session.info.pop(REVOKED_PENDING_KEY, None)
    queued = orm_session.info.pop(QUEUED_PENDING_KEY, None)
    if not (has_app_context() and EXTENSION_KEY in current_app.extensions):
        return
    if revoked:
        runtime().session_states.announce(revoked)
    if queued:
        _start_outbox_sender()
        runtime().outbox.wake()


def _after_rollback(orm_session: OrmSession) -> None:
    orm_session.info.pop(REVOKED_PENDING_KEY, None)
    orm_session.info.pop(QUEUED_PENDING_KEY, None)


def runtime() -> Runtime:
    """The current app's runtime; needs an app context (not a request)."""
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def reset_after_fork(app: Flask) -> None:
    """In a worker forked from a master that loaded the app (gunicorn's preload_app): nothing
    that holds a connection may be shared with the master or a sibling. The database pool is
    replaced without closing the master's connections (SQLAlchemy's recipe for forks), and
    the Redis pool is emptied; the key and verified-token caches are plain memory, kept (the
    session-state cache starts empty in each process with its own subscriber).
    Anything but an authsvc app (the benchmark's baseline, under the same gunicorn.conf.py) is
    left alone."""
    if EXTENSION_KEY not in getattr(app, "extensions", {}):
        return
    with app.app_context():
        from .extensions import db

        db.engine.dispose(close=False)
        redis_client = runtime().redis
        if redis_client is not None:
            redis_client.connection_pool.reset()


def build_runtime(settings: Settings) -> Runtime:
    redis_client = _redis_client(settings.redis_url) if settings.redis_url else None
    mail_secrets = MailSecrets(settings.secret_key)
    return Runtime(
        settings=settings,
        hasher=PasswordHasher(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        ),
        password_policy=PasswordPolicy(
            min_length=settings.password_min_length,
            max_length=settings.password_max_length,
            breached=(
                BreachedPasswordChecker(settings.breached_password_api)
                if settings.breached_password_api
                else None
            ),
        ),
        keyring=KeyRing(secret_key=settings.secret_key, policy=key_policy(settings)),
        redis=redis_client,
        verified_tokens=VerifiedTokens(),
        session_states=SessionStates(settings.session_cache_seconds, redis_client),
        failures=FailureLimits(settings.redis_url, enabled=settings.ratelimit_enabled),
        # AUTHSVC_EMAIL_COOLDOWN, on whatever AUTHSVC_RATELIMIT_ENABLED says.
        mail_cooldowns=FailureLimits(settings.redis_url, enabled=True),
        # Wrong second-factor codes, whatever AUTHSVC_RATELIMIT_ENABLED says: a 6-digit code
        # without a budget falls to a few hours of guessing.
        code_guesses=FailureLimits(settings.redis_url, enabled=True),
        mail_secrets=mail_secrets,
        factor_secrets=FactorSecrets(settings.secret_key),
        outbox=OutboxSender(
            settings.email,
            mail_secrets,
            MailRenderer(settings.email.mail_from, settings.email.templates),
            mail_backend(settings),
        ),
    )


def mail_backend(settings: Settings) -> MailBackend | None:
    """None: no mail server configured in production; messages wait in the outbox."""
    email = settings.email
    if email.backend == "smtp" and email.smtp is not None:
        return SmtpBackend(email.smtp)
    if email.backend == "console":
        return ConsoleBackend()
    return None


def key_policy(settings: Settings) -> KeyPolicy:
    rotation = settings.key_rotation_days
    return KeyPolicy(
        signing_alg=settings.signing_alg,
        publish_delay=timedelta(seconds=settings.jwks_max_age),
        rotate_after=timedelta(days=rotation) if rotation else None,
        # The longest-lived token a key signs is a refresh token; verifiers add the leeway.
        retain_retired=timedelta(
            seconds=max(settings.refresh_token_ttl, settings.access_token_ttl) + settings.leeway
        ),
    )


def _redis_client(url: str) -> Redis:
    # Imported only when configured: the redis package would sit in every worker's memory.
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )
