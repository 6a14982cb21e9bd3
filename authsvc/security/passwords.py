"""Password policy and hashing. The only module that imports passlib (from libpass)."""

from __future__ import annotations

import ctypes
import gzip
import os
import re
import sys
import threading
import time
import unicodedata
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Protocol

from passlib.context import CryptContext

from ..errors import WeakPassword

# A password that cannot be the real one: verifying against its hash costs exactly what a real
# verification costs, so an unknown username answers in the same time as a wrong password.
_DUMMY_PASSWORD = "authsvc dummy password, never a real one"  # noqa: S105


def normalize(password: str) -> str:
    """NFKC only: never truncated, trimmed or case-changed."""
    return unicodedata.normalize("NFKC", password)


class CommonPasswords:
    """The list as one sorted blob searched by bisection: a fraction of the memory a frozenset of
    the same strings takes in every worker (bench/README.md)."""

    def __init__(self, blob: bytes) -> None:
        self._blob = blob  # UTF-8 entries, each ending in a newline, sorted bytewise
        self._ends = array("I", (match.start() for match in re.finditer(b"\n", blob)))

    def _entry(self, index: int) -> bytes:
        start = self._ends[index - 1] + 1 if index else 0
        return self._blob[start : self._ends[index]]

    def __len__(self) -> int:
        return len(self._ends)

    def __iter__(self) -> Iterator[str]:
        return (self._entry(index).decode("utf-8") for index in range(len(self)))

    def __contains__(self, password: object) -> bool:
        if not isinstance(password, str):
            return False
        wanted = password.encode("utf-8", "surrogatepass")
        index = bisect_left(range(len(self)), wanted, key=self._entry)
        return index < len(self) and self._entry(index) == wanted


@cache
def common_passwords() -> CommonPasswords:
    """The shipped offline list (40,101 entries, lower-cased, sorted); see data/NOTICE.md."""
    data = resources.files("authsvc").joinpath("data/common-passwords.txt.gz").read_bytes()
    return CommonPasswords(gzip.decompress(data))


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


# argon2 mallocs its whole memory cost (19 MiB by default) for every hash, and glibc keeps freed
# blocks that large in its heap for reuse: after a burst of logins a worker stayed tens of MB
# larger for good. Once hashing has been quiet for a second, what is left is handed back to the
# system with malloc_trim (the next hash pays a few ms of page faults, once). gunicorn.conf.py
# sets the allocator up for this (one arena per worker, no trimming by free() itself under
# load); without glibc there is nothing to trim.
RELEASE_AFTER_IDLE_SECONDS = 1.0


@cache
def _libc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


class _HashMemory:
    """Counts hashes in flight; a daemon thread trims the heap after a quiet second."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._last_finished: float | None = None  # None: nothing to release
        self._pid: int | None = None  # the process the releasing thread runs in

    @contextmanager
    def hashing(self) -> Iterator[None]:
        libc = _libc()
        if libc is None:
            yield
            return
        with self._changed:
            if self._pid != os.getpid():  # first hash in this process (or after a fork)
                self._pid = os.getpid()
                threading.Thread(target=self._release_when_idle, daemon=True).start()
            self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._last_finished = time.monotonic()
                self._changed.notify()

    def _release_when_idle(self) -> None:
        libc = _libc()
        assert libc is not None
        while True:
            with self._changed:
                while True:
                    if self._last_finished is None or self._running:
                        self._changed.wait()
                        continue
                    quiet_for = time.monotonic() - self._last_finished
                    if quiet_for >= RELEASE_AFTER_IDLE_SECONDS:
                        self._last_finished = None
                        break
                    self._changed.wait(RELEASE_AFTER_IDLE_SECONDS - quiet_for)
            libc.malloc_trim(0)


_hash_memory = _HashMemory()


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
        with _hash_memory.hashing():
            self._dummy_hash = self._context.hash(_DUMMY_PASSWORD)
        # How long a verification at the current parameters takes here lately: a moving average
        # of the measured ones (the dummy's and those of current hashes), seeded by one now.
        self._current_cost = 0.0
        self._cost_lock = threading.Lock()
        self.dummy_verify(_DUMMY_PASSWORD)

    def hash(self, password: str) -> str:
        with _hash_memory.hashing():
            return self._context.hash(normalize(password))

    def verify_and_update(self, password: str, stored_hash: str) -> tuple[bool, str | None]:
        """Check ``password``; on success also return a new hash when the stored one is outdated."""
        started = time.perf_counter()
        try:
            with _hash_memory.hashing():
                result = self._context.verify_and_update(normalize(password), stored_hash)
        except (ValueError, TypeError):
            # An unreadable stored hash or a password a legacy scheme cannot take (bcrypt's
            # 72-byte limit) is a failed login, never a 500.
            return False, None
        if result[1] is None and not self.needs_update(stored_hash):
            self._measured(time.perf_counter() - started)
        return result

    def dummy_verify(self, password: str) -> None:
        """Spend the time of one real verification, for an unknown or disabled account."""
        started = time.perf_counter()
        with _hash_memory.hashing():
            self._context.verify(normalize(password), self._dummy_hash)
        self._measured(time.perf_counter() - started)

    def pad_failure(self, stored_hash: str, started: float) -> None:
        """After a failed check of ``stored_hash`` that began at ``started`` (perf_counter):
        if that hash is outdated (older, cheaper parameters, or a legacy scheme), wait until the
        check has taken as long as one at the current parameters does here, so a dormant
        account answers like a missing one (DESIGN §5). A check already slower (bcrypt at a
        high cost) is left as it is: it cannot be made faster."""
        if not self.needs_update(stored_hash):
            return
        remaining = self._current_cost - (time.perf_counter() - started)
        if remaining > 0:
            time.sleep(remaining)

    def _measured(self, seconds: float) -> None:
        with self._cost_lock:
            previous = self._current_cost
            self._current_cost = seconds if not previous else 0.8 * previous + 0.2 * seconds

    def needs_update(self, stored_hash: str) -> bool:
        return self._context.needs_update(stored_hash)
