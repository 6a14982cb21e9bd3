"""Settings from the environment, validated once at start-up.

Every variable the service reads is parsed here and nowhere else. A bad value raises
:class:`ConfigError` naming the variable, so a misconfigured deployment stops at start instead
of misbehaving later.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .config_admin import ADMIN_VARIABLES, AdminSettings, admin_settings
from .config_email import EmailSettings, email_settings
from .config_mfa import MFA_VARIABLES, MfaSettings, mfa_settings
from .config_reader import ConfigError, Reader, bind, url

SIGNING_ALGORITHMS = ("ES256", "RS256", "EdDSA")
TOKEN_LOCATIONS = ("headers", "cookies", "json", "query_string")
ENVIRONMENTS = ("production", "development")
MIN_SECRET_LENGTH = 32
MIN_CLIENT_SECRET = 16
MAX_LEEWAY = 60


@dataclass(frozen=True)
class Settings:
    env: str
    # Secrets (and URLs that may carry passwords) stay out of repr(): tracebacks, debuggers, logs.
    secret_key: str = field(repr=False)
    issuer: str
    audience: tuple[str, ...]
    database_url: str = field(repr=False)
    redis_url: str | None = field(repr=False)
    signing_alg: str
    access_token_ttl: int
    refresh_token_ttl: int
    session_max_age: int
    refresh_reuse_grace: int
    leeway: int
    session_cache_seconds: float
    key_rotation_days: int
    password_min_length: int
    password_max_length: int
    argon2_memory_kib: int
    argon2_time_cost: int
    argon2_parallelism: int
    ratelimit_enabled: bool
    ratelimit_login_username: str
    ratelimit_login_address: str
    ratelimit_signup_address: str
    ratelimit_refresh_address: str
    ratelimit_password_address: str
    ratelimit_client_failures: str
    jwks_max_age: int
    trusted_proxies: int
    token_location: tuple[str, ...]
    cors_origins: tuple[str, ...]
    introspection_clients: Mapping[str, str] = field(repr=False)
    breached_password_api: str | None = field(repr=False)
    db_pool_size: int
    metrics_bind: str | None
    instance_path: str
    email: EmailSettings
    mfa: MfaSettings
    admin: AdminSettings

    @property
    def development(self) -> bool:
        return self.env == "development"

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


# Variables create_app(overrides=...) accepts; anything else is a typo and is refused.
KNOWN_VARIABLES = frozenset(
    {
        "AUTHSVC_ENV",
        "AUTHSVC_SECRET_KEY",
        "AUTHSVC_ISSUER",
        "AUTHSVC_AUDIENCE",
        "DATABASE_URL",
        "REDIS_URL",
        "AUTHSVC_SIGNING_ALG",
        "AUTHSVC_ACCESS_TOKEN_TTL",
        "AUTHSVC_REFRESH_TOKEN_TTL",
        "AUTHSVC_SESSION_MAX_AGE",
        "AUTHSVC_REFRESH_REUSE_GRACE",
        "AUTHSVC_LEEWAY",
        "AUTHSVC_SESSION_CACHE_SECONDS",
        "AUTHSVC_KEY_ROTATION_DAYS",
        "AUTHSVC_PASSWORD_MIN_LENGTH",
        "AUTHSVC_PASSWORD_MAX_LENGTH",
        "AUTHSVC_ARGON2_MEMORY_KIB",
        "AUTHSVC_ARGON2_TIME_COST",
        "AUTHSVC_ARGON2_PARALLELISM",
        "AUTHSVC_RATELIMIT_ENABLED",
        "AUTHSVC_RATELIMIT_LOGIN_USERNAME",
        "AUTHSVC_RATELIMIT_LOGIN_ADDRESS",
        "AUTHSVC_RATELIMIT_SIGNUP_ADDRESS",
        "AUTHSVC_RATELIMIT_REFRESH_ADDRESS",
        "AUTHSVC_RATELIMIT_PASSWORD_ADDRESS",
        "AUTHSVC_RATELIMIT_CLIENT_FAILURES",
        "AUTHSVC_JWKS_MAX_AGE",
        "AUTHSVC_TRUSTED_PROXIES",
        "AUTHSVC_TOKEN_LOCATION",
        "AUTHSVC_CORS_ORIGINS",
        "AUTHSVC_INTROSPECTION_CLIENTS",
        "AUTHSVC_BREACHED_PASSWORD_API",
        "AUTHSVC_DB_POOL_SIZE",
        "AUTHSVC_METRICS_BIND",
        "AUTHSVC_EMAIL_VERIFICATION",
        "AUTHSVC_EMAIL_LINK_URL",
        "AUTHSVC_EMAIL_VERIFICATION_TTL",
        "AUTHSVC_EMAIL_CHANGE_TTL",
        "AUTHSVC_PASSWORD_RESET_TTL",
        "AUTHSVC_EMAIL_COOLDOWN",
        "AUTHSVC_SMTP_URL",
        "AUTHSVC_SMTP_TIMEOUT",
        "AUTHSVC_SMTP_CA_FILE",
        "AUTHSVC_MAIL_BACKEND",
        "AUTHSVC_MAIL_FROM",
        "AUTHSVC_MAIL_TEMPLATES",
        "AUTHSVC_OUTBOX_SENDER",
        "AUTHSVC_RATELIMIT_EMAIL_ADDRESS",
    }
    | MFA_VARIABLES
    | ADMIN_VARIABLES
)


# Drivers this service ships; anything else would fail later with an import error.
_DATABASE_DRIVERS = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}


def _database_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    driver = _DATABASE_DRIVERS.get(scheme.lower()) if sep else None
    if driver is None:
        shown = scheme if sep else "malformed"
        raise ConfigError(
            f"DATABASE_URL must be a sqlite:// or postgresql:// URL, got a {shown!r} URL"
        )
    if driver == "sqlite" and (rest in {"", "/"} or ":memory:" in rest or "mode=memory" in rest):
        # Each connection would get its own empty database.
        raise ConfigError("DATABASE_URL must name a SQLite file, not an in-memory database")
    return f"{driver}://{rest}"


def _weak_secret(secret: str) -> bool:
    if len(secret) < MIN_SECRET_LENGTH:
        return True
    # A long string of one or two repeated characters is long but guessable.
    return len(set(secret)) < 8


def _development_secret(instance_path: str) -> str:
    """The secret kept in the instance folder, created on first start (development only).

    Written to a private temporary file and linked into place, so two processes starting at
    once agree on one secret and nobody ever reads a half-written file.
    """
    path = Path(instance_path) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
        # 0600 from the start: the generated secret is never world-readable, not even briefly.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process won the race; use its secret
        finally:
            temporary.unlink()
    secret = path.read_text().strip()
    if _weak_secret(secret):
        raise ConfigError(
            f"AUTHSVC_SECRET_KEY: the generated secret in {path} is empty or damaged; "
            "delete the file to generate a new one"
        )
    return secret


def _introspection_clients(name: str, values: tuple[str, ...]) -> dict[str, str]:
    clients: dict[str, str] = {}
    for entry in values:
        client_id, sep, secret = entry.partition(":")
        if not sep or not client_id or not secret:
            raise ConfigError(f"{name} entries must be 'id:secret', got an entry without one")
        if client_id in clients:
            raise ConfigError(f"{name} names client {client_id!r} twice")
        clients[client_id] = secret
    return clients


def load_settings(
    instance_path: str,
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build :class:`Settings` from ``environ`` (default os.environ), ``overrides`` on top."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - KNOWN_VARIABLES)
    if unknown:
        raise ConfigError(f"unknown configuration variable(s): {', '.join(unknown)}")
    merged = {**(os.environ if environ is None else environ), **overrides}
    read = Reader({key: str(value) for key, value in merged.items()})
    env = read.choice("AUTHSVC_ENV", "production", ENVIRONMENTS)
    development = env == "development"
    identity = _identity_settings(read, development)
    return Settings(
        env=env,
        instance_path=instance_path,
        **_secret_settings(read, development, instance_path),
        **identity,
        **_store_settings(read, instance_path),
        **_token_settings(read),
        **_password_settings(read),
        **_throttling_settings(read),
        **_client_settings(read, development),
        email=email_settings(read, development, identity["issuer"]),
        mfa=mfa_settings(read, identity["issuer"]),
        admin=admin_settings(read),
    )


def _secret_settings(read: Reader, development: bool, instance_path: str) -> dict[str, Any]:
    secret_key = read.raw("AUTHSVC_SECRET_KEY")
    if secret_key is None:
        if not development:
            raise ConfigError(
                "AUTHSVC_SECRET_KEY is required outside development: set it to a random string of "
                f"at least {MIN_SECRET_LENGTH} characters (e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'`)"
            )
        secret_key = _development_secret(instance_path)
    elif _weak_secret(secret_key) and not development:
        raise ConfigError(
            f"AUTHSVC_SECRET_KEY is too weak: use a random string of at least "
            f"{MIN_SECRET_LENGTH} characters"
        )
    return {"secret_key": secret_key}


def _identity_settings(read: Reader, development: bool) -> dict[str, Any]:
    """The issuer URL (exactly ``iss``) and the access tokens' audience."""
    issuer_raw = read.raw("AUTHSVC_ISSUER")
    if issuer_raw is None:
        if not development:
            raise ConfigError(
                "AUTHSVC_ISSUER is required outside development: the public base URL of this "
                "service, e.g. https://auth.example.com"
            )
        issuer_raw = "http://localhost:8000"
    issuer = url("AUTHSVC_ISSUER", issuer_raw)
    audience = read.csv("AUTHSVC_AUDIENCE") or ("authsvc",)
    if issuer in audience:
        # Refresh tokens carry the issuer as their audience; an access audience equal to it
        # would let a refresh token pass a downstream audience check.
        raise ConfigError("AUTHSVC_AUDIENCE must not contain the issuer URL")
    if f"{issuer.rstrip('/')}/admin" in audience:
        # The operator tokens' audience (DESIGN §11): a service expecting it would take them.
        raise ConfigError("AUTHSVC_AUDIENCE must not contain the admin audience <issuer>/admin")
    return {"issuer": issuer, "audience": audience}


def _store_settings(read: Reader, instance_path: str) -> dict[str, Any]:
    database_url = _database_url(
        read.string("DATABASE_URL", f"sqlite:///{Path(instance_path) / 'authsvc.db'}")
    )
    redis_url = read.raw("REDIS_URL")
    if redis_url is not None and urlsplit(redis_url).scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError("REDIS_URL must be a redis://, rediss:// or unix:// URL")
    return {
        "database_url": database_url,
        "redis_url": redis_url,
        "db_pool_size": read.integer("AUTHSVC_DB_POOL_SIZE", 10, minimum=1, maximum=200),
    }


def _token_settings(read: Reader) -> dict[str, Any]:
    token_location = read.csv("AUTHSVC_TOKEN_LOCATION") or ("headers",)
    for location in token_location:
        if location not in TOKEN_LOCATIONS:
            raise ConfigError(
                f"AUTHSVC_TOKEN_LOCATION entries must be among {', '.join(TOKEN_LOCATIONS)}, "
                f"got {location!r}"
            )
    if "headers" not in token_location:
        raise ConfigError("AUTHSVC_TOKEN_LOCATION must include headers")
    access_ttl = read.integer("AUTHSVC_ACCESS_TOKEN_TTL", 900, minimum=1)
    refresh_ttl = read.integer("AUTHSVC_REFRESH_TOKEN_TTL", 2_592_000, minimum=1)
    session_max_age = read.integer("AUTHSVC_SESSION_MAX_AGE", 7_776_000, minimum=1)
    if refresh_ttl > session_max_age:
        raise ConfigError("AUTHSVC_REFRESH_TOKEN_TTL must not exceed AUTHSVC_SESSION_MAX_AGE")
    return {
        "token_location": token_location,
        "signing_alg": read.choice("AUTHSVC_SIGNING_ALG", "ES256", SIGNING_ALGORITHMS),
        "access_token_ttl": access_ttl,
        "refresh_token_ttl": refresh_ttl,
        "session_max_age": session_max_age,
        "refresh_reuse_grace": read.integer("AUTHSVC_REFRESH_REUSE_GRACE", 10, maximum=300),
        "leeway": read.integer("AUTHSVC_LEEWAY", 10, maximum=MAX_LEEWAY),
        # With REDIS_URL only, while the revocation subscription is healthy (0: never cache).
        "session_cache_seconds": read.integer("AUTHSVC_SESSION_CACHE_SECONDS", 2, maximum=30),
        "key_rotation_days": read.integer("AUTHSVC_KEY_ROTATION_DAYS", 30),
        "jwks_max_age": read.integer("AUTHSVC_JWKS_MAX_AGE", 300, maximum=86_400),
    }


def _password_settings(read: Reader) -> dict[str, Any]:
    min_length = read.integer("AUTHSVC_PASSWORD_MIN_LENGTH", 12, minimum=8, maximum=1024)
    max_length = read.integer("AUTHSVC_PASSWORD_MAX_LENGTH", 128, minimum=8, maximum=1024)
    if min_length > max_length:
        raise ConfigError("AUTHSVC_PASSWORD_MIN_LENGTH must not exceed AUTHSVC_PASSWORD_MAX_LENGTH")
    parallelism = read.integer("AUTHSVC_ARGON2_PARALLELISM", 1, minimum=1, maximum=64)
    memory = read.integer("AUTHSVC_ARGON2_MEMORY_KIB", 19_456, minimum=8, maximum=4_194_304)
    if memory < 8 * parallelism:
        raise ConfigError(
            "AUTHSVC_ARGON2_MEMORY_KIB must be at least 8 x AUTHSVC_ARGON2_PARALLELISM"
        )
    breached_api = read.raw("AUTHSVC_BREACHED_PASSWORD_API")
    if breached_api is not None:
        breached_api = url("AUTHSVC_BREACHED_PASSWORD_API", breached_api)
    return {
        "password_min_length": min_length,
        "password_max_length": max_length,
        "argon2_memory_kib": memory,
        "argon2_time_cost": read.integer("AUTHSVC_ARGON2_TIME_COST", 2, minimum=1, maximum=100),
        "argon2_parallelism": parallelism,
        "breached_password_api": breached_api,
    }


def _throttling_settings(read: Reader) -> dict[str, Any]:
    return {
        "ratelimit_enabled": read.boolean("AUTHSVC_RATELIMIT_ENABLED", True),
        "ratelimit_login_username": read.rate_limit(
            "AUTHSVC_RATELIMIT_LOGIN_USERNAME", "10/minute;100/hour"
        ),
        "ratelimit_login_address": read.rate_limit("AUTHSVC_RATELIMIT_LOGIN_ADDRESS", "30/minute"),
        "ratelimit_signup_address": read.rate_limit(
            "AUTHSVC_RATELIMIT_SIGNUP_ADDRESS", "10/minute"
        ),
        "ratelimit_refresh_address": read.rate_limit(
            "AUTHSVC_RATELIMIT_REFRESH_ADDRESS", "60/minute"
        ),
        "ratelimit_password_address": read.rate_limit(
            "AUTHSVC_RATELIMIT_PASSWORD_ADDRESS", "10/minute"
        ),
        # Failed introspection client authentications, per client id and per address.
        "ratelimit_client_failures": read.rate_limit(
            "AUTHSVC_RATELIMIT_CLIENT_FAILURES", "10/minute;100/hour"
        ),
    }


def _client_settings(read: Reader, development: bool) -> dict[str, Any]:
    """Who may call, and from where: proxies, browser origins, introspection clients."""
    clients = _introspection_clients(
        "AUTHSVC_INTROSPECTION_CLIENTS", read.csv("AUTHSVC_INTROSPECTION_CLIENTS")
    )
    short = sorted(client for client, secret in clients.items() if len(secret) < MIN_CLIENT_SECRET)
    if short and not development:
        # A short secret falls to guessing however slowly guesses are let through.
        raise ConfigError(
            f"AUTHSVC_INTROSPECTION_CLIENTS: the secret of {', '.join(map(repr, short))} is "
            f"shorter than {MIN_CLIENT_SECRET} characters (allowed in development only)"
        )
    return {
        "metrics_bind": bind("AUTHSVC_METRICS_BIND", read.raw("AUTHSVC_METRICS_BIND")),
        "trusted_proxies": read.integer("AUTHSVC_TRUSTED_PROXIES", 0, maximum=10),
        "cors_origins": read.csv("AUTHSVC_CORS_ORIGINS"),
        "introspection_clients": clients,
    }
