"""The generic half of configuration: reading a variable as a type, naming it in every error.

``authsvc.config`` says which variables exist and what they mean; this module only converts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

_RATE_LIMIT = re.compile(
    r"^\s*[1-9]\d*\s*(/|per)\s*([1-9]\d*)?\s*(second|minute|hour|day)s?\s*$", re.I
)


class ConfigError(ValueError):
    """A configuration variable is missing or invalid; the message names it."""


class Reader:
    """Reads raw strings from the merged environment and converts them, naming the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def string(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        text = self.raw(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigError(f"{name} must be {bound}, got {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        text = self.raw(name)
        if text is None:
            return default
        lowered = text.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name} must be true or false, got {text!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(name, default)
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def csv(self, name: str) -> tuple[str, ...]:
        text = self.raw(name) or ""
        return tuple(part.strip() for part in text.split(",") if part.strip())

    def rate_limit(self, name: str, default: str) -> str:
        value = self.string(name, default)
        for part in value.split(";"):
            if not _RATE_LIMIT.match(part):
                raise ConfigError(f"{name} must look like '10/minute;100/hour', got {value!r}")
        return value


def url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")
    # Even an empty "?" or "#" would end up inside `iss` and every derived URL.
    if "?" in value or "#" in value:
        raise ConfigError(f"{name} must not have a query or fragment, got {value!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{name} must not contain credentials")
    return value.rstrip("/")


def bind(name: str, value: str | None) -> str | None:
    """``host:port`` (IPv6 hosts in brackets), or None when unset."""
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{name} must be host:port, e.g. 127.0.0.1:9100, got {value!r}")
    return value
