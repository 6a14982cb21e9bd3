"""Failed secret checks, counted per target and reserved before the secret is checked.

DESIGN §5: N concurrent guesses for one account (or client, or address) never evaluate more
than the limit. So a guess takes one unit of every limit *before* argon2 or the comparison runs
(an atomic increment in Redis or in process memory: of N concurrent takers exactly the limit's
amount succeed; the others answer 429 without checking anything), and a check that succeeds
gives its units back: only failures count, and while a target is throttled even the right
secret waits.

The counters are fixed windows (limits' ``FixedWindowRateLimiter``) because a unit can be given
back exactly: giving back is a decrement of the same counter. (A window that ends between the
reservation and the give-back leaves the next window one unit below zero: one extra guess, once
per window, at worst.) With REDIS_URL they are shared by every worker and replica; an
unreachable Redis raises, which answers 503 (fail closed).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field

from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from ..errors import RateLimited

_PREFIX = "authsvc-failures"


@dataclass
class Reservation:
    """Units taken from each limit for one guess; ``succeeded()`` gives them back."""

    _limiter: FixedWindowRateLimiter | None
    _taken: list[tuple[RateLimitItem, tuple[str, ...]]] = field(default_factory=list)

    def took(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> None:
        self._taken.append((item, identifiers))

    def succeeded(self) -> None:
        """The secret was right: this guess does not count."""
        if self._limiter is not None:
            for item, identifiers in self._taken:
                self._limiter.hit(item, *identifiers, cost=-1)
        self._taken.clear()


class FailureLimits:
    """The failure counters of one app (``Runtime.failures``)."""

    def __init__(self, storage_uri: str | None, *, enabled: bool) -> None:
        self._enabled = enabled
        options = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0} if storage_uri else {}
        self._storage: Storage = storage_from_string(storage_uri or "memory://", **options)
        self._limiter = FixedWindowRateLimiter(self._storage)

    def reserve(self, scope: str, target: str, limits: str) -> Reservation:
        """Take a unit of each of ``limits`` ("10/minute;100/hour") for ``target`` in ``scope``;
        RateLimited (429, with Retry-After) if any is used up, and nothing is taken then."""
        if not self._enabled:
            return Reservation(None)
        reservation = Reservation(self._limiter)
        identifiers = (_PREFIX, scope, _digest(target))
        for item in parse_many(limits):
            if not self._limiter.hit(item, *identifiers):
                self._limiter.hit(item, *identifiers, cost=-1)  # the refused unit itself
                reservation.succeeded()  # and those already taken: a refused guess is free
                raise RateLimited(
                    headers={"Retry-After": str(self._retry_after(item, identifiers))}
                )
            reservation.took(item, identifiers)
        return reservation

    def _retry_after(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> int:
        reset_at = self._limiter.get_window_stats(item, *identifiers).reset_time
        return min(item.get_expiry(), max(1, math.ceil(reset_at - time.time())))


def _digest(target: str) -> str:
    # Usernames and client ids stay out of the store's keys (and out of anything that logs them).
    return hashlib.sha256(target.encode()).hexdigest()[:32]
