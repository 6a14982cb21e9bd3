"""Password policy and hashing. The only module that imports passlib (from libpass)."""

from __future__ import annotations

import gzip
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Protocol

from passlib.context import CryptContext

from .errors import WeakPassword

# A password that cannot be the real one: verifying against its hash costs exactly what a real
# verification costs, so an unknown username answers in the same time as a wrong password.
_DUMMY_PASSWORD = "authsvc dummy password, never a real one"  # noqa: S105


def normalize(password: str) -> str:
    """NFKC only: never truncated, trimmed or case-changed."""
    return unicodedata.normalize("NFKC", password)


@cache
def common_passwords() -> frozenset[str]:
    """The shipped offline list (40,101 entries, lower-cased); see data/NOTICE.md."""
    data = resources.files("authsvc").joinpath("data/common-passwords.txt.gz").read_bytes()
    return frozenset(gzip.decompress(data).decode("utf-8").split())


class BreachChecker(Protocol):
    def is_breached(self, password: str) -> bool: ...


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int
    max_length: int
    # AUTHSVC_BREACHED_PASSWORD_API, asked last (it is the only check that leaves the process).
    breached: BreachChecker | None = None

    def check(self, password: str, *, username: str | None = None) -> str:
        """Return the normalised password, or raise WeakPassword with the reason."""
        normalized = normalize(password)
        if len(normalized) < self.min_length:
            raise WeakPassword(f"The password must be at least {self.min_length} characters long.")
        if len(normalized) > self.max_length:
            raise WeakPassword(f"The password must be at most {self.max_length} characters long.")
        lowered = normalized.casefold()
        if lowered in common_passwords():
            raise WeakPassword("That password is too common; choose another.")
        if username is not None and lowered == username.casefold():
            raise WeakPassword("The password must not be the username.")
        if self.breached is not None and self.breached.is_breached(normalized):
            raise WeakPassword("This password has appeared in a data breach; choose another.")
        return normalized


class PasswordHasher:
    """argon2id for new hashes; bcrypt and pbkdf2_sha256 hashes verify and are upgraded."""

    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int) -> None:
        self._context = CryptContext(
            schemes=["argon2", "bcrypt", "pbkdf2_sha256"],
            deprecated=["bcrypt", "pbkdf2_sha256"],
            argon2__type="ID",
            argon2__memory_cost=memory_kib,
            argon2__rounds=time_cost,
            argon2__parallelism=parallelism,
            # bcrypt only reads 72 bytes; refuse instead of silently truncating.
            bcrypt__truncate_error=True,
        )
        # Made once at start, so the first unknown-user login costs no more than later ones.
        self._dummy_hash = self._context.hash(_DUMMY_PASSWORD)

    def hash(self, password: str) -> str:
        return self._context.hash(normalize(password))

    def verify_and_update(self, password: str, stored_hash: str) -> tuple[bool, str | None]:
        """Check ``password``; on success also return a new hash when the stored one is outdated."""
        try:
            return self._context.verify_and_update(normalize(password), stored_hash)
        except (ValueError, TypeError):
            # An unreadable stored hash or a password a legacy scheme cannot take (bcrypt's
            # 72-byte limit) is a failed login, never a 500.
            return False, None

    def dummy_verify(self, password: str) -> None:
        """Spend the time of one real verification, for an unknown or disabled account."""
        self._context.verify(normalize(password), self._dummy_hash)

    def needs_update(self, stored_hash: str) -> bool:
        return self._context.needs_update(stored_hash)
