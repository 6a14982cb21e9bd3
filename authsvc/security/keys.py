"""Signing keys: generation, encryption at rest, the in-process key cache and the JWKS.

Each key row holds an asymmetric pair (access tokens, published in the JWKS) and an HMAC secret
(refresh tokens, HS256, never published), rotated together.

Keys live in the database so every worker and replica signs and verifies with the same set.
Each process caches the decoded keys for a short time (well under ``AUTHSVC_JWKS_MAX_AGE``, the
delay between a key being published and it signing), so a key created by another replica is
known here before any token signed with it can arrive.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import get_default_algorithms
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from ..audit import security_event
from ..models import SigningKey, utcnow
from ..store import keys as key_store
from ..store.database import rollback_quietly, write_transaction

# How long a process trusts its cached view of the key table: at most this, and at most a
# quarter of the publish delay, so a due `next` key starts signing promptly everywhere.
CACHE_SECONDS = 30.0
# An unknown `kid` triggers a reload at most this often, so forged kids cannot hammer the database.
UNKNOWN_KID_RELOAD_SECONDS = 1.0
# While the database is unreachable, the cached keys are served and a reload tried this often.
STORE_RETRY_SECONDS = 1.0
PUBLISHED_STATES = ("next", "active", "retired")
HMAC_ALG = "HS256"
HMAC_KID_PREFIX = "hs."
HMAC_KEY_BYTES = 32

log = logging.getLogger("authsvc.keys")
# Public JWK members, the only ones ever published (RFC 7517/7518/8037).
_PUBLIC_MEMBERS = ("kty", "crv", "x", "y", "n", "e")
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}
_ALGORITHMS = get_default_algorithms()

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


def generate_private_key(alg: str) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported signing algorithm {alg!r}")


def public_jwk(public_key: PublicKey, alg: str) -> dict[str, str]:
    """The public JWK with a RFC 7638 thumbprint as ``kid``: public members only."""
    full = _ALGORITHMS[alg].to_jwk(public_key, as_dict=True)
    jwk = {member: full[member] for member in _PUBLIC_MEMBERS if member in full}
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    jwk["kid"] = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    jwk["use"] = "sig"
    jwk["alg"] = alg
    return jwk


class KeyEncryptor:
    """AES-256-GCM with a key derived (HKDF-SHA256) from AUTHSVC_SECRET_KEY; the kid is bound in."""

    def __init__(self, secret_key: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"authsvc signing-key encryption v1",
        ).derive(secret_key.encode())
        self._aead = AESGCM(derived)

    def encrypt(self, private_key: PrivateKey, kid: str) -> bytes:
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, pem, kid.encode())

    def encrypt_secret(self, secret: bytes, kid: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, secret, f"{kid}:hmac".encode())

    def decrypt_secret(self, blob: bytes, kid: str) -> bytes:
        return self._aead.decrypt(blob[:12], blob[12:], f"{kid}:hmac".encode())

    def decrypt(self, blob: bytes, kid: str) -> PrivateKey:
        pem = self._aead.decrypt(blob[:12], blob[12:], kid.encode())
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(
            key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
        ):
            raise ValueError("unexpected private key type")
        return key


@dataclass(frozen=True)
class KeyPolicy:
    """When keys move through their states (DESIGN §4)."""

    signing_alg: str
    # A `next` key is published this long before it signs: one JWKS cache lifetime.
    publish_delay: timedelta
    # The active key is replaced after this long; None: manual rotation only.
    rotate_after: timedelta | None
    # A retired key stays published until no token it signed can still be accepted.
    retain_retired: timedelta


@dataclass(frozen=True)
class LoadedKey:
    """One row of the key table: the asymmetric pair that signs access tokens (``kid``, ``alg``,
    published) and the HMAC secret that signs refresh tokens (``hmac_kid``, HS256, never
    published: only this service verifies refresh tokens). Both move through the states
    together."""

    kid: str
    alg: str
    state: str
    private_key: PrivateKey
    public_key: PublicKey
    jwk: dict[str, str]
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    hmac_key: bytes = field(repr=False)

    @property
    def hmac_kid(self) -> str:
        return hmac_kid_of(self.kid)


def hmac_kid_of(kid: str) -> str:
    # "." is outside the base64url alphabet of the thumbprint kids: the two never collide.
    return f"{HMAC_KID_PREFIX}{kid}"


class KeyRing:
    """This process's cached view of the signing-key table, and the key lifecycle.

    Lifecycle: ``next`` (published, not signing) -> ``active`` (signing) -> ``retired``
    (verifying, published) -> deleted. Every transition is one conditional write, so replicas
    doing the same step at the same moment make it once; the partial unique indexes (one
    ``active``, one ``next``) stop two replicas from creating two keys.
    """

    def __init__(self, *, secret_key: str, policy: KeyPolicy) -> None:
        self._encryptor = KeyEncryptor(secret_key)
        self.policy = policy
        self._keys: dict[str, LoadedKey] = {}
        self._by_hmac_kid: dict[str, LoadedKey] = {}
        self._loaded_at = float("-inf")
        self._last_unknown_reload = float("-inf")
        self._lock = threading.Lock()
        self._cache_seconds = min(CACHE_SECONDS, max(1.0, policy.publish_delay.total_seconds() / 4))

    # -- reading -------------------------------------------------------------------------------

    def _reload(self) -> None:
        rows = key_store.in_states(PUBLISHED_STATES)
        if any(row.hmac_key_encrypted is None for row in rows):
            self._add_missing_hmac_keys([row.kid for row in rows if row.hmac_key_encrypted is None])
            rows = key_store.in_states(PUBLISHED_STATES)
        keys: dict[str, LoadedKey] = {}
        for row in rows:
            cached = self._keys.get(row.kid)
            private_key = (
                cached.private_key
                if cached is not None
                else self._encryptor.decrypt(row.private_key_encrypted, row.kid)
            )
            keys[row.kid] = LoadedKey(
                kid=row.kid,
                alg=row.alg,
                state=row.state,
                private_key=private_key,
                public_key=cached.public_key if cached is not None else private_key.public_key(),
                jwk=dict(row.public_jwk),
                created_at=row.created_at,
                activated_at=row.activated_at,
                retired_at=row.retired_at,
                hmac_key=(
                    cached.hmac_key
                    if cached is not None
                    else self._encryptor.decrypt_secret(row.hmac_key_encrypted, row.kid)
                ),
            )
        with self._lock:
            self._keys = keys
            self._by_hmac_kid = {key.hmac_kid: key for key in keys.values()}
            self._loaded_at = time.monotonic()

    def _add_missing_hmac_keys(self, kids: list[str]) -> None:
        """Keys made before refresh tokens had their own (migration 0003) get one, once: each
        write is conditional on the column being empty, so racing replicas agree on one."""
        with write_transaction():
            for kid in kids:
                secret = self._encryptor.encrypt_secret(os.urandom(HMAC_KEY_BYTES), kid)
                key_store.set_hmac_key_if_missing(kid, secret)

    def _fresh(self) -> dict[str, LoadedKey]:
        if time.monotonic() - self._loaded_at > self._cache_seconds:
            try:
                self._reload()
                if self._maintain():
                    self._reload()
            except (DBAPIError, PoolTimeoutError):
                # The database is unreachable: keep publishing and verifying with the keys we
                # know (a key is retired long before it goes, so none is wrongly trusted), and
                # try again shortly. With no keys at all there is nothing to serve: 503.
                rollback_quietly()
                if not self._keys:
                    raise
                log.warning("key table unreachable; serving the cached keys")
                self._loaded_at = time.monotonic() - self._cache_seconds + STORE_RETRY_SECONDS
        return self._keys

    def refresh(self) -> None:
        """Forget the cache: the next call reads the table (after a CLI change, in tests)."""
        self._loaded_at = float("-inf")

    def verification_key(self, kid: str) -> LoadedKey | None:
        """The published key named ``kid``, or None. Unknown kids reload at most once a second."""
        return self._lookup(lambda: self._keys, kid)

    def refresh_key(self, hmac_kid: str) -> LoadedKey | None:
        """The key whose HMAC secret ``hmac_kid`` names (refresh tokens), or None."""
        return self._lookup(lambda: self._by_hmac_kid, hmac_kid)

    def _lookup(self, index: Callable[[], dict[str, LoadedKey]], kid: str) -> LoadedKey | None:
        self._fresh()
        key = index().get(kid)
        if key is None:
            now = time.monotonic()
            if now - self._last_unknown_reload >= UNKNOWN_KID_RELOAD_SECONDS:
                self._last_unknown_reload = now
                self._reload()
                key = index().get(kid)
        return key

    def cached_signing_key(self) -> LoadedKey:
        """The active key, from the cache when the database is unreachable (JWKS, discovery)."""
        active = _find(self._fresh(), "active")
        return active if active is not None else self.signing_key()

    def signing_key(self) -> LoadedKey:
        """The active key, creating the first one (or one for a changed algorithm) if needed."""
        active = _find(self._fresh(), "active")
        if active is None or active.alg != self.policy.signing_alg:
            self._reload()
            active = _find(self._keys, "active")
            if active is None or active.alg != self.policy.signing_alg:
                self.activate_new_key(replacing=active.kid if active else None)
                self._reload()
                active = _find(self._keys, "active")
                if active is None:
                    raise RuntimeError("no active signing key after bootstrap")
        return active

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        keys = sorted(self._fresh().values(), key=lambda key: PUBLISHED_STATES.index(key.state))
        return {"keys": [key.jwk for key in keys]}

    # -- the lifecycle -------------------------------------------------------------------------

    def _maintain(self) -> bool:
        """Run the lifecycle steps that are due; True if the table may have changed (by this
        process or by another that won the same step), so the caller reloads."""
        now = utcnow()
        keys = self._keys
        attempted = False
        pending = _find(keys, "next")
        active = _find(keys, "active")
        if pending is not None and active is not None:
            if self.signs_from(pending.created_at) <= now:
                promote(pending.kid, active.kid)
                attempted = True
        elif pending is None and active is not None and self.policy.rotate_after is not None:
            started = active.activated_at or active.created_at
            if started + self.policy.rotate_after <= now:
                self.publish_next_key(reason="scheduled")
                attempted = True
        if any(
            key.retired_at is not None and key.retired_at + self.policy.retain_retired <= now
            for key in keys.values()
        ):
            delete_dead_keys(self.policy.retain_retired)
            attempted = True
        return attempted

    def signs_from(self, created_at: datetime) -> datetime:
        """When a key created at ``created_at`` may start signing: after every replica's cache
        has picked it up (at most one cache lifetime) and then one full JWKS max-age, so any
        verifier's cached JWKS already holds it."""
        return created_at + self.policy.publish_delay + timedelta(seconds=self._cache_seconds)

    def publish_next_key(self, *, reason: str) -> SigningKey | None:
        """Publish a new ``next`` key; None if one is already pending (here or elsewhere)."""
        row = self.create_key_row("next")
        try:
            with write_transaction():
                key_store.add(row)
                security_event(
                    "key_published",
                    kid=row.kid,
                    alg=row.alg,
                    reason=reason,
                    signs_from=self.signs_from(row.created_at).isoformat(),
                )
        except IntegrityError:
            return None
        return row

    def create_key_row(self, state: str) -> SigningKey:
        """A new key row in ``state`` (not added to the session)."""
        alg = self.policy.signing_alg
        private_key = generate_private_key(alg)
        jwk = public_jwk(private_key.public_key(), alg)
        now = utcnow()
        return SigningKey(
            kid=jwk["kid"],
            alg=alg,
            state=state,
            public_jwk=jwk,
            private_key_encrypted=self._encryptor.encrypt(private_key, jwk["kid"]),
            hmac_key_encrypted=self._encryptor.encrypt_secret(
                os.urandom(HMAC_KEY_BYTES), jwk["kid"]
            ),
            created_at=now,
            activated_at=now if state == "active" else None,
        )

    def activate_new_key(self, replacing: str | None) -> None:
        """Bootstrap: no active key yet, or the configured algorithm changed.

        There is no publish delay here: with no key there are no tokens whose verifiers could
        hold a stale JWKS, and an algorithm change is an operator's explicit switch. Two
        processes doing this at once collide on the one-active-key index; the loser reloads.
        """
        try:
            with write_transaction():
                if replacing is not None:
                    key_store.move(replacing, "active", "retired", retired_at=utcnow())
                key_store.add(self.create_key_row("active"))
        except IntegrityError:
            pass  # another process created the key first; the caller reloads.


def _find(keys: dict[str, LoadedKey], state: str) -> LoadedKey | None:
    return next((key for key in keys.values() if key.state == state), None)


def promote(next_kid: str, active_kid: str) -> str | None:
    """Make ``next_kid`` the signing key and retire ``active_kid``; the new kid, or None if
    another process did it first (both updates are conditional on the states we saw)."""
    now = utcnow()
    try:
        with write_transaction():
            if not (
                key_store.move(active_kid, "active", "retired", retired_at=now)
                and key_store.move(next_kid, "next", "active", activated_at=now)
            ):
                raise _Abandon()
            security_event("key_rotated", kid=next_kid, retired_kid=active_kid)
    except _Abandon:
        return None
    return next_kid


class _Abandon(Exception):
    """Rolls a half-done promotion back."""


def delete_dead_keys(retain_retired: timedelta) -> int:
    """Delete retired keys no token they signed can still use."""
    cutoff = utcnow() - retain_retired
    with write_transaction():
        kids = key_store.retired_before(cutoff)
        if kids:
            key_store.delete_kids(kids)
        for kid in kids:
            security_event("key_deleted", kid=kid)
    return len(kids)


def list_keys() -> list[SigningKey]:
    return key_store.all_in_lifecycle_order()
