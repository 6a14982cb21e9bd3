"""The per-app objects services need (settings, hasher, key ring, denylist), in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

from .config import Settings
from .denylist import Denylist
from .keys import KeyRing
from .passwords import PasswordHasher, PasswordPolicy

if TYPE_CHECKING:
    from redis import Redis

EXTENSION_KEY = "authsvc"


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    hasher: PasswordHasher
    password_policy: PasswordPolicy
    keyring: KeyRing
    denylist: Denylist
    redis: Redis | None


def install(app: Flask, runtime: Runtime) -> None:
    app.extensions[EXTENSION_KEY] = runtime


def runtime() -> Runtime:
    """The current app's runtime; needs an app context (not a request)."""
    return current_app.extensions[EXTENSION_KEY]
