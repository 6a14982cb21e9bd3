"""Throttling with Flask-Limiter (DESIGN §5): every request per client address on /login,
/signup, /refresh, /password, the e-mail and the MFA endpoints, counted before the view runs.
(Failed guesses per account or client are ``authsvc.security.attempts``.)

Counters live in Redis when REDIS_URL is set (shared by every worker and replica), in process
memory otherwise. A store that cannot be reached is an error (503), never a silently missing
limit. Each app gets its own Limiter, wrapping its own view functions; the 429 answer, with the
hit limit's own ``Retry-After``, is mapped here too.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded

from ..config import Settings
from ..errors import RateLimited

EXTENSION_KEY = "authsvc.limiter"
EMAIL_ENDPOINTS = (
    "email.request_verification",
    "email.verify",
    "email.forgot_password",
    "email.reset_password",
    "email.change_email",
)
# Every MFA endpoint takes a code or a password (DESIGN §10).
MFA_ENDPOINTS = (
    "mfa.login",
    "mfa.enrol_totp",
    "mfa.confirm_totp",
    "mfa.remove_factor",
    "mfa.regenerate_recovery_codes",
)
# The passkey endpoints: each takes a password, a credential or a fresh challenge.
WEBAUTHN_ENDPOINTS = (
    "webauthn.register_options",
    "webauthn.register",
    "webauthn.login_options",
    "webauthn.login",
    "webauthn.mfa_options",
)


def client_address() -> str:
    """The client address as throttling keys it, after ProxyFix applied
    AUTHSVC_TRUSTED_PROXIES: an IPv4 address alone, an IPv6 client by its /64 (one subscriber's
    whole network: its hosts choose their own low 64 bits at will)."""
    return address_key(request.remote_addr or "unknown")


def address_key(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{parsed}/64", strict=False))
    return str(parsed)


def register_throttling(app: Flask, settings: Settings) -> Limiter:
    storage_options: dict[str, Any] = {}
    if settings.redis_url:
        storage_options = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    limiter = Limiter(
        key_func=client_address,
        app=app,
        storage_uri=settings.redis_url or "memory://",
        storage_options=storage_options,
        strategy="sliding-window-counter",
        key_prefix="authsvc",
        enabled=settings.ratelimit_enabled,
        # Fail closed: an unreachable store raises (and answers 503) instead of letting every
        # request through unthrottled.
        swallow_errors=False,
        in_memory_fallback_enabled=False,
        headers_enabled=False,
    )

    def limited(endpoint: str, *decorators: Callable[[Any], Any]) -> None:
        view = app.view_functions[endpoint]
        for decorate in decorators:
            view = decorate(view)
        app.view_functions[endpoint] = view

    # Disabled (AUTHSVC_RATELIMIT_ENABLED=false): the views are not wrapped at all, rather than
    # wrapped by limits that are then skipped on every request (bench/README.md item 12).
    if settings.ratelimit_enabled:
        limited("auth.login", limiter.limit(settings.ratelimit_login_address))
        limited("account.change_password", limiter.limit(settings.ratelimit_password_address))
        limited("account.delete_me", limiter.limit(settings.ratelimit_password_address))
        limited("auth.signup", limiter.limit(settings.ratelimit_signup_address))
        limited("auth.refresh", limiter.limit(settings.ratelimit_refresh_address))
        # Each e-mail endpoint per client address (the per-address cooldown and the per-user
        # password budget are the services' own, authsvc.services.email).
        for endpoint in EMAIL_ENDPOINTS:
            limited(endpoint, limiter.limit(settings.email.ratelimit_address))
        # The MFA endpoints per client address (wrong codes per user: services/mfa.py).
        for endpoint in (*MFA_ENDPOINTS, *WEBAUTHN_ENDPOINTS):
            limited(endpoint, limiter.limit(settings.mfa.ratelimit_address))
    app.extensions[EXTENSION_KEY] = limiter
    app.register_error_handler(RateLimitExceeded, _rate_limited)
    return limiter


def _rate_limited(_error: RateLimitExceeded) -> Response:
    return RateLimited(headers={"Retry-After": str(retry_after_seconds())}).response()


def retry_after_seconds() -> int:
    """Seconds until the limit that was just hit lets a request through again."""
    limiter: Limiter | None = current_app.extensions.get(EXTENSION_KEY)
    current = limiter.current_limit if limiter is not None else None
    if current is None:
        return 60
    window = current.limit.get_expiry()
    return min(window, max(1, math.ceil(current.reset_at - time.time())))
