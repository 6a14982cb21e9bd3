"""authsvc: a standalone token issuer. ``create_app`` is the only entry point."""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .api import register_api
from .audit import register_audit
from .cli import register_cli
from .config import ConfigError, Settings, load_settings
from .errors import register_error_handlers
from .extensions import cors
from .observability import register_observability
from .runtime import EXTENSION_KEY as RUNTIME_KEY
from .runtime import register_runtime
from .security.throttling import register_throttling
from .services import email as email_service
from .store.database import register_database
from .tokens.flask import register_tokens

__all__ = ["ConfigError", "create_app"]


def create_app(overrides: Mapping[str, str] | None = None) -> Flask:
    """Build the app. ``overrides`` maps configuration variable names to values (over the env)."""
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    settings = load_settings(app.instance_path, overrides)
    app.config["SECRET_KEY"] = settings.secret_key
    register_proxies(app, settings)
    register_database(app, settings.database_url, settings.db_pool_size)
    register_tokens(app, settings)
    register_cors(app, settings)
    register_runtime(app, settings)
    register_audit(app)
    register_mail_requests(app)
    register_api(app)
    register_throttling(app, settings)
    register_error_handlers(app, uses_redis=settings.redis_url is not None)
    register_observability(app)
    register_cli(app)
    return app


def register_proxies(app: Flask, settings: Settings) -> None:
    """Trust AUTHSVC_TRUSTED_PROXIES hops of X-Forwarded-For/-Proto, and no more."""
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )


def register_mail_requests(app: Flask) -> None:
    """The outbox sender resolves a stranger's request for a mail (which account, if any, it
    is for) with the e-mail service that queued it."""
    app.extensions[RUNTIME_KEY].outbox.request_handler = email_service.resolve_request


def register_cors(app: Flask, settings: Settings) -> None:
    if settings.cors_origins:
        cors.init_app(
            app,
            origins=list(settings.cors_origins),
            supports_credentials=True,
            allow_headers=["Authorization", "Content-Type", "X-CSRF-TOKEN", "X-Request-Id"],
            expose_headers=["X-Request-Id", "WWW-Authenticate", "Retry-After"],
        )
