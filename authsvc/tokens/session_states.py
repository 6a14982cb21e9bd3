"""A per-process cache of session state, kept true by a revocation broadcast (DESIGN §3).

The database's session row is the revocation authority. Reading it is one round trip per
request on PostgreSQL, the largest part of a ``GET /me`` once the signature is cached. So a
process may remember the row it read, for at most ``AUTHSVC_SESSION_CACHE_SECONDS``, on these
terms:

- Every revocation is announced after its transaction commits: ``store.sessions.revoke``
  records what it revoked on the ORM session, and the ``after_commit`` hook (``authsvc.runtime``)
  calls ``announce``. That drops it from this process's cache at once (this process refuses
  the token before the logout's response leaves) and publishes it on the Redis channel
  ``authsvc:revocations``. Each process's subscriber thread drops what it hears: a logout on
  any replica is refused on every replica within a few milliseconds (the tests hold it to
  DESIGN's 100 ms).
- The cache is used only while this process's subscription is known to be healthy: subscribed,
  and heard from (a message or the answer to its own PING every ``HEARTBEAT_SECONDS``) within
  ``HEALTHY_WITHIN_SECONDS``. Otherwise every request reads the database. Losing the connection,
  subscribing again and hearing again after a silence all empty the cache, since announcements
  made in between may be lost.
- A read that raced an announcement is not stored: ``reading()`` hands out the current epoch,
  every announcement or reconnect advances it, and ``put`` stores only under an unchanged epoch.
- Without Redis there is no broadcast that reaches the other worker processes, nor the ``flask``
  CLI that disables a user from another process, so the cache is never used: the local drop
  still runs, and every request reads the database (on SQLite, a local file read).

The cached row is the session statement's row; liveness (revoked, expired, disabled, owner) is
still computed from it on every request, so expiry needs no announcement.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger("authsvc.tokens")

CHANNEL = "authsvc:revocations"
CAPACITY = 4096
HEARTBEAT_SECONDS = 0.25
HEALTHY_WITHIN_SECONDS = 1.0
# After a lost connection, wait this long (doubling to the cap) before subscribing again.
RECONNECT_FIRST_SECONDS = 0.05
RECONNECT_MAX_SECONDS = 1.0


class SessionStates:
    """The cache and, with a Redis client, its subscriber (one thread per process, started on
    first use so that a preloaded master never runs it and each forked worker runs its own)."""

    def __init__(self, ttl_seconds: float, redis_client: Redis | None) -> None:
        self._ttl = ttl_seconds
        self._redis = redis_client
        self._entries: OrderedDict[uuid.UUID, tuple[float, str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._epoch = 0
        self._subscribed = False
        self._last_heard = float("-inf")
        self._owner_pid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.hits = 0

    @property
    def enabled(self) -> bool:
        return self._redis is not None and self._ttl > 0

    def healthy(self) -> bool:
        """Whether announcements are known to reach this process right now."""
        if not self.enabled:
            return False
        self._ensure_subscriber()
        return self._subscribed and time.monotonic() - self._last_heard < HEALTHY_WITHIN_SECONDS

    def get(self, session_id: uuid.UUID) -> Any:
        """The cached row of a session, or None (not cached, too old, or cache not usable)."""
        if not self.healthy():
            return None
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None:
                return None
            stored_at, _user, row = entry
            if time.monotonic() - stored_at >= self._ttl:
                del self._entries[session_id]
                return None
            self._entries.move_to_end(session_id)
            self.hits += 1
            return row

    def reading(self) -> int | None:
        """Call before reading a row from the database: the epoch to ``put`` it under, or None
        when the cache is not usable (then nothing is stored)."""
        return self._epoch if self.healthy() else None

    def put(self, session_id: uuid.UUID, user_id: Any, row: Any, epoch: int | None) -> None:
        with self._lock:
            if epoch is None or epoch != self._epoch:
                return  # an announcement (or a reconnect) came while the row was being read
            self._entries[session_id] = (time.monotonic(), str(user_id), row)
            self._entries.move_to_end(session_id)
            while len(self._entries) > CAPACITY:
                self._entries.popitem(last=False)

    def drop(self, revoked: list[tuple[str, str]]) -> None:
        """Forget the sessions named (``("s", session id)``) or the user's (``("u", user id)``)."""
        sessions = {uuid.UUID(value) for kind, value in revoked if kind == "s"}
        users = {value for kind, value in revoked if kind == "u"}
        with self._lock:
            self._epoch += 1
            for session_id in sessions:
                self._entries.pop(session_id, None)
            if users:
                for session_id in [
                    key for key, (_at, user, _row) in self._entries.items() if user in users
                ]:
                    del self._entries[session_id]

    def flush(self) -> None:
        with self._lock:
            self._epoch += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def announce(self, revoked: list[tuple[str, str]]) -> None:
        """Drop here at once, then tell every other process (after the revocation committed)."""
        self.drop(revoked)
        if self._redis is None:
            return
        from redis.exceptions import RedisError

        payload = " ".join(f"{kind}:{value}" for kind, value in revoked)
        try:
            self._redis.publish(CHANNEL, payload)
        except RedisError:
            # The revocation is committed; a subscriber that lost Redis too has stopped using
            # its cache, and any other entry is at most AUTHSVC_SESSION_CACHE_SECONDS old.
            log.warning("revocation broadcast failed; other processes see it within the cache TTL")

    # The subscriber.

    def _ensure_subscriber(self) -> None:
        pid = os.getpid()
        if self._owner_pid == pid:
            return
        with self._lock:
            if self._owner_pid == pid:
                return
            # In a forked child the parent's thread does not exist: start this process's own,
            # with empty state (nothing the parent cached has been kept true here).
            self._owner_pid = pid
            self._entries.clear()
            self._epoch += 1
            self._subscribed = False
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._listen, name="authsvc-revocations", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop this process's subscriber (tests; the process exiting does it otherwise)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and self._owner_pid == os.getpid():
            thread.join(timeout=2 * HEARTBEAT_SECONDS + 1)
        self._owner_pid = None
        self._subscribed = False

    def _listen(self) -> None:
        from redis.exceptions import RedisError

        assert self._redis is not None
        delay = RECONNECT_FIRST_SECONDS
        stop = self._stop
        while not stop.is_set():
            pubsub = self._redis.pubsub()
            try:
                pubsub.subscribe(CHANNEL)
                next_ping = time.monotonic()
                while not stop.is_set():
                    if time.monotonic() >= next_ping:
                        pubsub.ping()
                        next_ping = time.monotonic() + HEARTBEAT_SECONDS
                    message = pubsub.get_message(timeout=HEARTBEAT_SECONDS)
                    if message is not None:
                        self._heard(message)
                        delay = RECONNECT_FIRST_SECONDS
            except (RedisError, OSError) as error:
                if self._subscribed:
                    log.warning(
                        "revocation subscription lost (%s); reading sessions from the "
                        "database until it is back",
                        type(error).__name__,
                    )
                self._lost()
                stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    pubsub.close()
        self._subscribed = False

    def _heard(self, message: dict[str, Any]) -> None:
        if time.monotonic() - self._last_heard >= HEALTHY_WITHIN_SECONDS:
            # Silent long enough to have stopped being trusted (a hung Redis, a partition): an
            # announcement may have been lost meanwhile, so trust resumes from nothing.
            self.flush()
        kind = message.get("type")
        if kind == "subscribe":
            # Anything announced before this point is unknown here: start from nothing.
            self.flush()
            self._subscribed = True
        elif kind == "message":
            data = message.get("data") or b""
            text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
            revoked = []
            for item in text.split():
                kind_and_value = item.split(":", 1)
                if len(kind_and_value) == 2 and kind_and_value[0] in ("s", "u"):
                    revoked.append((kind_and_value[0], kind_and_value[1]))
            try:
                self.drop(revoked)
            except ValueError:
                self.flush()  # not ours or garbled: forget everything rather than guess
        self._last_heard = time.monotonic()

    def _lost(self) -> None:
        self._subscribed = False
        self.flush()
