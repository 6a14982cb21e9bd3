"""Signing keys: generation, encryption at rest, the in-process key cache and the JWKS.

Keys live in the database so every worker and replica signs and verifies with the same set.
Each process caches the decoded keys for a short time (well under ``AUTHSVC_JWKS_MAX_AGE``, the
delay between a key being published and it signing), so a key created by another replica is
known here before any token signed with it can arrive.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import get_default_algorithms
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from .database import write_transaction
from .extensions import db
from .models import SigningKey, utcnow

# How long a process trusts its cached view of the key table.
CACHE_SECONDS = 30.0
# An unknown `kid` triggers a reload at most this often, so forged kids cannot hammer the database.
UNKNOWN_KID_RELOAD_SECONDS = 1.0
PUBLISHED_STATES = ("next", "active", "retired")
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

    def decrypt(self, blob: bytes, kid: str) -> PrivateKey:
        pem = self._aead.decrypt(blob[:12], blob[12:], kid.encode())
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(
            key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
        ):
            raise ValueError("unexpected private key type")
        return key


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    alg: str
    state: str
    private_key: PrivateKey
    public_key: PublicKey
    jwk: dict[str, str]
    activated_at: datetime | None


class KeyRing:
    """This process's cached view of the signing-key table."""

    def __init__(self, *, secret_key: str, signing_alg: str) -> None:
        self._encryptor = KeyEncryptor(secret_key)
        self._signing_alg = signing_alg
        self._keys: dict[str, LoadedKey] = {}
        self._loaded_at = float("-inf")
        self._last_unknown_reload = float("-inf")
        self._lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------------

    def _reload(self) -> None:
        rows = db.session.scalars(
            select(SigningKey).where(SigningKey.state.in_(PUBLISHED_STATES))
        ).all()
        keys: dict[str, LoadedKey] = {}
        for row in rows:
            cached = self._keys.get(row.kid)
            if cached is not None and cached.state == row.state:
                keys[row.kid] = cached
                continue
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
                public_key=private_key.public_key(),
                jwk=dict(row.public_jwk),
                activated_at=row.activated_at,
            )
        with self._lock:
            self._keys = keys
            self._loaded_at = time.monotonic()

    def _fresh(self) -> dict[str, LoadedKey]:
        if time.monotonic() - self._loaded_at > CACHE_SECONDS:
            self._reload()
        return self._keys

    def verification_key(self, kid: str) -> LoadedKey | None:
        """The published key named ``kid``, or None. Unknown kids reload at most once a second."""
        key = self._fresh().get(kid)
        if key is None:
            now = time.monotonic()
            if now - self._last_unknown_reload >= UNKNOWN_KID_RELOAD_SECONDS:
                self._last_unknown_reload = now
                self._reload()
                key = self._keys.get(kid)
        return key

    def signing_key(self) -> LoadedKey:
        """The active key, creating the first one (or one for a changed algorithm) if needed."""
        active = self._active(self._fresh())
        if active is None or active.alg != self._signing_alg:
            self._reload()
            active = self._active(self._keys)
            if active is None or active.alg != self._signing_alg:
                self._activate_new_key(replacing=active.kid if active else None)
                self._reload()
                active = self._active(self._keys)
                if active is None:
                    raise RuntimeError("no active signing key after bootstrap")
        return active

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        keys = sorted(self._fresh().values(), key=lambda key: PUBLISHED_STATES.index(key.state))
        return {"keys": [key.jwk for key in keys]}

    @staticmethod
    def _active(keys: dict[str, LoadedKey]) -> LoadedKey | None:
        return next((key for key in keys.values() if key.state == "active"), None)

    # -- writing -------------------------------------------------------------------------------

    def create_key_row(self, state: str) -> SigningKey:
        """A new key row in ``state`` (not added to the session)."""
        private_key = generate_private_key(self._signing_alg)
        jwk = public_jwk(private_key.public_key(), self._signing_alg)
        now = utcnow()
        return SigningKey(
            kid=jwk["kid"],
            alg=self._signing_alg,
            state=state,
            public_jwk=jwk,
            private_key_encrypted=self._encryptor.encrypt(private_key, jwk["kid"]),
            created_at=now,
            activated_at=now if state == "active" else None,
        )

    def _activate_new_key(self, replacing: str | None) -> None:
        """Bootstrap: no active key yet, or the configured algorithm changed.

        There is no publish delay here: with no key there are no tokens whose verifiers could
        hold a stale JWKS, and an algorithm change is an operator's explicit switch. Two
        processes doing this at once collide on the one-active-key index; the loser reloads.
        """
        try:
            with write_transaction():
                if replacing is not None:
                    db.session.execute(
                        update(SigningKey)
                        .where(SigningKey.kid == replacing, SigningKey.state == "active")
                        .values(state="retired", retired_at=utcnow())
                    )
                db.session.add(self.create_key_row("active"))
        except IntegrityError:
            pass  # another process created the key first; the caller reloads.
