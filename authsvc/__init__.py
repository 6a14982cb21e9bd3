"""authsvc: a standalone token issuer. ``create_app`` is the only entry point."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import jwt_segments, verified_tokens
from .api import account, auth, introspection, ops, wellknown
from .api.common import MAX_BODY_BYTES, NoSessionInterface
from .breached import BreachedPasswordChecker
from .cli import register_cli
from .config import ConfigError, Settings, load_settings
from .database import configure_postgresql, configure_sqlite, engine_options
from .denylist import DatabaseDenylist, Denylist, RedisDenylist
from .errors import register_error_handlers
from .extensions import cors, db, jwt
from .keys import KeyPolicy, KeyRing
from .observability import register_observability
from .passwords import PasswordHasher, PasswordPolicy
from .runtime import Runtime, install
from .throttling import register_throttling
from .tokens import jwt_config, register_jwt_callbacks

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["ConfigError", "create_app"]

# Redis answers in well under a millisecond on a healthy network; waiting longer than this
# only delays the 503 that fail-closed gives anyway.
REDIS_TIMEOUT_SECONDS = 1.0

log = logging.getLogger("authsvc")


def create_app(overrides: Mapping[str, str] | None = None) -> Flask:
    """Build the app. ``overrides`` maps configuration variable names to values (over the env)."""
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    settings = load_settings(app.instance_path, overrides)
    configure_flask(app, settings)
    register_extensions(app, settings)
    register_runtime(app, settings)
    register_blueprints(app)
    register_throttling(app, settings)
    register_error_handlers(app, settings)
    register_observability(app)
    register_cli(app)
    return app


def configure_flask(app: Flask, settings: Settings) -> None:
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(settings.database_url, settings.db_pool_size),
        **jwt_config(settings),
    )
    app.session_interface = NoSessionInterface()
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )


def register_extensions(app: Flask, settings: Settings) -> None:
    db.init_app(app)
    with app.app_context():
        if settings.uses_sqlite:
            configure_sqlite(db.engine)
        else:
            configure_postgresql(db.engine)
    jwt_segments.install()  # before the first token is parsed; see the module for why
    jwt.init_app(app)
    verified_tokens.install(app)
    register_jwt_callbacks(jwt)
    if settings.cors_origins:
        cors.init_app(
            app,
            origins=list(settings.cors_origins),
            supports_credentials=True,
            allow_headers=["Authorization", "Content-Type", "X-CSRF-TOKEN", "X-Request-Id"],
            expose_headers=["X-Request-Id", "WWW-Authenticate", "Retry-After"],
        )


def register_runtime(app: Flask, settings: Settings) -> None:
    redis_client: Redis | None = None
    denylist: Denylist
    if settings.redis_url:
        # Imported only when configured: the redis package is ~5 MB in every worker.
        from redis import Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        redis_client = Redis.from_url(
            settings.redis_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        denylist = RedisDenylist(redis_client)
    else:
        denylist = DatabaseDenylist()
    install(
        app,
        Runtime(
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
            denylist=denylist,
            redis=redis_client,
        ),
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


def register_blueprints(app: Flask) -> None:
    for blueprint in (auth.bp, account.bp, introspection.bp, wellknown.bp, ops.bp):
        app.register_blueprint(blueprint)
