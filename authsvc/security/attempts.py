"""Failed secret checks, counted per target (DESIGN §5).

Passwords (``reserve``): N concurrent guesses for one account never evaluate more than the
limit. A guess takes one unit of every limit *before* argon2 runs (an atomic increment in Redis
or in process memory: of N concurrent takers only the limit's amount succeed; the rest answer
429 without checking anything), and a check that succeeds gives its units back, so only
failures count; while a target is throttled even the right password waits.

Client secrets (``refuse_if_exhausted`` then ``count_failure``): a constant-time comparison
takes microseconds and a busy resource server introspects many tokens at once, so holding a
unit across the comparison would throttle the legitimate client by its own concurrency. There
the budget is tested first and a failure counted after; concurrent guesses can exceed the limit
by the server's concurrency at most, against secrets of 16 characters or more.

The counters are fixed windows (limits' ``FixedWindowRateLimiter``): a unit can be given back
exactly, as a decrement of the same counter, done only while that counter is above zero (a
give-back that lands after its window ended is dropped; two racing give-backs on a counter of 1
can still take it to -1, one extra guess). A refused unit is never given back: a fixed window
ends at its expiry whatever its count. With REDIS_URL the counters are shared by every worker
and replica; an unreachable Redis raises, which answers 503 (fail closed).
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

    _limits: FailureLimits | None
    _taken: list[tuple[RateLimitItem, tuple[str, ...]]] = field(default_factory=list)

    def took(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> None:
        self._taken.append((item, identifiers))

    def succeeded(self) -> None:
        """The secret was right: this guess does not count."""
        if self._limits is not None:
            for item, identifiers in self._taken:
                self._limits.give_back(item, identifiers)
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
        RateLimited (429, with Retry-After) if any is used up, and nothing is kept taken then."""
        if not self._enabled:
            return Reservation(None)
        reservation = Reservation(self)
        identifiers = _identifiers(scope, target)
        for item in parse_many(limits):
            if not self._limiter.hit(item, *identifiers):
                reservation.succeeded()  # the units already taken: a refused guess is free
                raise self._refusal(item, identifiers)
            reservation.took(item, identifiers)
        return reservation

    def refuse_if_exhausted(self, scope: str, target: str, limits: str) -> None:
        """RateLimited if ``target`` has no failure left in one of ``limits`` (nothing taken)."""
        if not self._enabled:
            return
        identifiers = _identifiers(scope, target)
        for item in parse_many(limits):
            if not self._limiter.test(item, *identifiers):
                raise self._refusal(item, identifiers)

    def count_failure(self, scope: str, target: str, limits: str) -> None:
        if not self._enabled:
            return
        identifiers = _identifiers(scope, target)
        for item in parse_many(limits):
            self._limiter.hit(item, *identifiers)

    def give_back(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> None:
        if self._storage.get(item.key_for(*identifiers)) > 0:
            self._limiter.hit(item, *identifiers, cost=-1)

    def _refusal(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> RateLimited:
        reset_at = self._limiter.get_window_stats(item, *identifiers).reset_time
        retry_after = min(item.get_expiry(), max(1, math.ceil(reset_at - time.time())))
        return RateLimited(headers={"Retry-After": str(retry_after)})


def _identifiers(scope: str, target: str) -> tuple[str, ...]:
    # Usernames and client ids stay out of the store's keys (and out of anything that logs them).
    return (_PREFIX, scope, hashlib.sha256(target.encode()).hexdigest()[:32])
