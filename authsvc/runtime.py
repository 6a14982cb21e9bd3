"""The per-app objects the services and token checks need, in one typed container under one
``app.extensions`` key: settings, password hasher and policy, key ring, denylist, Redis client,
verified-token cache, failed-guess counters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from flask import Flask, current_app

from .config import Settings
from .security.attempts import FailureLimits
from .security.breached import BreachedPasswordChecker
from .security.keys import KeyPolicy, KeyRing
from .security.passwords import PasswordHasher, PasswordPolicy
from .store.denylist import DatabaseDenylist, Denylist, RedisDenylist
from .tokens.cache import VerifiedTokens

if TYPE_CHECKING:
    from redis import Redis

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
    denylist: Denylist
    redis: Redis | None
    verified_tokens: VerifiedTokens
    failures: FailureLimits


def register_runtime(app: Flask, settings: Settings) -> Runtime:
    built = build_runtime(settings)
    app.extensions[EXTENSION_KEY] = built
    return built


def runtime() -> Runtime:
    """The current app's runtime; needs an app context (not a request)."""
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def reset_after_fork(app: Flask) -> None:
    """In a worker forked from a master that loaded the app (gunicorn's preload_app): nothing
    that holds a connection may be shared with the master or a sibling. The database pool is
    replaced without closing the master's connections (SQLAlchemy's recipe for forks), and
    the Redis pool is emptied; the caches (keys, verified tokens) are plain memory, kept.
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
        denylist=RedisDenylist(redis_client) if redis_client is not None else DatabaseDenylist(),
        redis=redis_client,
        verified_tokens=VerifiedTokens(),
        failures=FailureLimits(settings.redis_url, enabled=settings.ratelimit_enabled),
    )


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
