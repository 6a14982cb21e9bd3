"""Tokens whose signature and claims were verified, remembered by their exact text.

A client sends the same access token with every request for its 15-minute life. Checking its
ES256 signature costs about 85 µs, and flask-jwt-extended parses the token three more times
around that; together they were a quarter of a ``GET /me``. Like the JWT cache of Envoy's
jwt_authn filter, this remembers the claims of tokens that passed full verification:

- The key is the whole token text, so a token differing in a single byte (another signature,
  a tampered claim) is a miss and is verified in full. Nothing unverified is ever stored.
- A hit re-checks what can change while the token does not: ``exp``, ``nbf`` and ``iat``
  against the clock with the configured leeway (exactly PyJWT's comparisons), and that the
  signing key (``kid``) is still published. If any fails, the entry is dropped and the token
  takes the full path, which gives the usual error.
- Revocation is never cached: the session and denylist checks run on every request after this.
- Decoding with a CSRF value (cookie mode) or with ``allow_expired`` always takes the full path,
  and only access tokens are stored (a refresh token is used once).

Bounded (least recently used first out), one per app, shared by the app's threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flask import current_app
from flask_jwt_extended import JWTManager
from jwt import get_unverified_header

CAPACITY = 1024
EXTENSION_KEY = "authsvc_verified_tokens"


class VerifiedTokens:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

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


class CachingJWTManager(JWTManager):
    """flask-jwt-extended's JWTManager, consulting the app's VerifiedTokens before decoding.

    ``_decode_jwt_from_config`` is where flask-jwt-extended turns a token into verified claims
    (every @jwt_required view, ``verify_jwt_in_request`` and ``decode_token`` go through it);
    tests/test_verified_tokens.py fails if a new flask-jwt-extended stops calling it.
    """

    def _decode_jwt_from_config(
        self, encoded_token: str, csrf_value: str | None = None, allow_expired: bool = False
    ) -> dict[str, Any]:
        cache: VerifiedTokens | None = current_app.extensions.get(EXTENSION_KEY)
        if cache is None or csrf_value is not None or allow_expired:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        leeway = current_app.config["JWT_DECODE_LEEWAY"]
        claims = cache.get(encoded_token, leeway=leeway, key_published=_key_published)
        if claims is None:
            claims = super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
            # Refresh tokens are used once (rotation): only access tokens come back.
            if claims.get("type") == "access":
                # Verified with the key this kid names (authsvc.tokens.verification_key).
                cache.put(encoded_token, get_unverified_header(encoded_token)["kid"], claims)
        return claims


def _key_published(kid: str) -> bool:
    from .runtime import runtime  # runtime imports this module's importers

    return runtime().keyring.verification_key(kid) is not None


def install(app: Any, capacity: int = CAPACITY) -> VerifiedTokens:
    cache = VerifiedTokens(capacity)
    app.extensions[EXTENSION_KEY] = cache
    return cache
