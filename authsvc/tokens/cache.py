"""Tokens whose signature and claims were verified, remembered by their exact text.

A client sends the same access token with every request for its 15-minute life, and checking
its signature (plus flask-jwt-extended's parses around it) is a large part of a ``GET /me``
(bench/README.md). Like the JWT cache of Envoy's jwt_authn filter, this remembers the claims of
tokens that passed full verification:

- The key is the whole token text, so a token differing in a single byte (another signature,
  a tampered claim) is a miss and is verified in full. Nothing unverified is ever stored.
- A hit re-checks what can change while the token does not: ``exp``, ``nbf`` and ``iat``
  against the clock with the configured leeway (exactly PyJWT's comparisons), and that the
  signing key (``kid``) is still published. If any fails, the entry is dropped and the token
  takes the full path, which gives the usual error.
- Revocation is not decided here: the session check runs on every request after this
  (``tokens.session_states`` may answer it from memory, on its own terms).
- Decoding with a CSRF value (cookie mode) or with ``allow_expired`` always takes the full path,
  and only access tokens are stored (a refresh token is used once).

Bounded (least recently used first out), one per app (``Runtime.verified_tokens``), shared by
the app's threads; consulted through ``authsvc.compat.flask_jwt_extended``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

CAPACITY = 1024


class VerifiedTokens:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, token: object) -> bool:
        return token in self._entries

    def tokens(self) -> list[str]:
        """The remembered tokens, least recently used first."""
        with self._lock:
            return list(self._entries)

    def get(
        self, token: str, *, leeway: float, key_published: Callable[[str], bool]
    ) -> dict[str, Any] | None:
        """The claims of ``token`` if it was verified and still would be, else None."""
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            self._entries.move_to_end(token)
        kid, claims = entry
        now = time.time()
        if (
            claims["exp"] <= now - leeway
            or claims["nbf"] > now + leeway
            or claims["iat"] > now + leeway
            or not key_published(kid)
        ):
            with self._lock:
                self._entries.pop(token, None)
            return None
        with self._lock:
            self.hits += 1
        return dict(claims)  # callers may add to it; the cached copy stays as verified

    def put(self, token: str, kid: str, claims: dict[str, Any]) -> None:
        with self._lock:
            self._entries[token] = (kid, dict(claims))
            self._entries.move_to_end(token)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
