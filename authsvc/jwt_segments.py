"""PyJWT's strict base64url segment decoding, with the alphabet check done in C.

PyJWT 2.14 started rejecting segments with characters outside the base64url alphabet
(GHSA-hxm8-2xgr-2p9m), which we want, but it checks them one byte at a time in a Python
generator. flask-jwt-extended parses every token four times per request (unverified claims,
unverified header twice, verified decode), so that loop was the largest single cost of
``GET /me``: about 110 µs of a 500-character ES256 token's check, more than the signature.

``install()`` swaps in the same function with the loop replaced by ``bytes.translate`` (every
alphabet byte deleted; anything left is junk). It accepts and rejects exactly what PyJWT's does:
``tests/test_jwt_segments.py`` compares both on every kind of malformed segment, so a PyJWT
upgrade that changes the rules fails the suite instead of being silently overridden. A PyJWT
without the method is left alone.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable

from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError
from jwt.utils import base64url_decode, base64url_encode

BASE64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

ORIGINAL: Callable[[bytes, str], bytes] | None = None


def decode_segment(segment: bytes, name: str) -> bytes:
    """PyJWS._decode_base64url_segment of PyJWT 2.14/2.15, line for line but the alphabet test."""
    # Accept trailing '=' used by some issuers (e.g. AWS ALB); still reject non-alphabet junk.
    padding = 0
    stripped = segment
    while stripped.endswith(b"="):
        stripped = stripped[:-1]
        padding += 1
        if padding > 2:
            raise DecodeError(f"Invalid {name} padding")

    if padding and len(segment) % 4 != 0:
        raise DecodeError(f"Invalid {name} padding")

    if len(stripped) % 4 == 1 or stripped.translate(None, BASE64URL_ALPHABET):
        raise DecodeError(f"Invalid {name} padding")

    try:
        decoded = base64url_decode(stripped)
    except (TypeError, binascii.Error) as err:
        raise DecodeError(f"Invalid {name} padding") from err

    if base64url_encode(decoded) != stripped:
        raise DecodeError(f"Invalid {name} padding")

    return decoded


def install() -> None:
    """Use ``decode_segment`` in PyJWT (idempotent; process-wide, like PyJWT's own globals)."""
    global ORIGINAL
    current = PyJWS.__dict__.get("_decode_base64url_segment")
    if not isinstance(current, staticmethod) or current.__func__ is decode_segment:
        return
    ORIGINAL = current.__func__
    PyJWS._decode_base64url_segment = staticmethod(decode_segment)  # type: ignore[method-assign]
