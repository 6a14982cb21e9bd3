"""PyJWT's token parsing made cheap: the strict base64url check done in C, and each token parsed
once per request instead of four times.

PyJWT 2.14 started rejecting segments with characters outside the base64url alphabet
(GHSA-hxm8-2xgr-2p9m), which we want, but it checks them one byte at a time in a Python
generator. flask-jwt-extended parses every token four times per request (unverified claims,
unverified header twice, verified decode), so that loop was the largest single cost of
``GET /me``, more than the signature check: about 110 µs of an 835 µs ``GET /me`` when measured
(bench/README.md, "What changed", item 1).

``install()`` swaps in the same function with the loop replaced by ``bytes.translate`` (every
alphabet byte deleted; anything left is junk). It accepts and rejects exactly what PyJWT's does:
``tests/unit/test_compat_pyjwt.py`` compares both on every kind of malformed segment, so a PyJWT
upgrade that changes the rules fails the suite instead of being silently overridden. A PyJWT
without the method is left alone. pyproject.toml pins PyJWT to the tested minor.

It also remembers the last few parses (``PyJWS._load``: split, three segments decoded, header
JSON), a pure function of the token's text: flask-jwt-extended's four parses of one token cost
one, about 50 µs of a 1,100 µs refresh when measured (item 13 there). Each caller gets its own
copy of the header (a deep one when it nests anything); nothing is cached for a token that fails
to parse, or for one much longer than any this service issues (the parse happens before the
signature is checked, so anyone can fill the memo: its size is what bounds the memory that
costs).
"""

from __future__ import annotations

import binascii
import copy
import functools
from collections.abc import Callable
from typing import Any

from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError
from jwt.utils import base64url_decode, base64url_encode

BASE64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

ORIGINAL: Callable[[bytes, str], bytes] | None = None
# PyJWT's own parser, kept before ``install()`` replaces it (None: this PyJWT has none).
ORIGINAL_LOAD: Callable[[PyJWS, str | bytes], tuple[bytes, bytes, dict[str, Any], bytes]] | None = (
    PyJWS.__dict__.get("_load")
)
# Tokens this service issues are about 500 characters; longer ones are parsed every time.
MAX_REMEMBERED_TOKEN = 1536
_PARSER = PyJWS()


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


@functools.lru_cache(maxsize=16)  # a few requests in flight, four parses each
def remembered_load(token: str | bytes) -> tuple[bytes, bytes, dict[str, Any], bytes, bool]:
    payload, signing_input, header, signature = ORIGINAL_LOAD(_PARSER, token)  # type: ignore[misc]
    flat = not any(isinstance(value, dict | list) for value in header.values())
    return payload, signing_input, header, signature, flat


def load(self: PyJWS, jwt: str | bytes) -> tuple[bytes, bytes, dict[str, Any], bytes]:
    """PyJWS._load, remembered for recent tokens (see above). Installed only when
    ``ORIGINAL_LOAD`` exists."""
    if type(jwt) not in (str, bytes) or len(jwt) > MAX_REMEMBERED_TOKEN:
        return ORIGINAL_LOAD(self, jwt)  # type: ignore[misc]
    payload, signing_input, header, signature, flat = remembered_load(jwt)
    return payload, signing_input, dict(header) if flat else copy.deepcopy(header), signature


def install() -> None:
    """Use ``decode_segment`` and ``load`` in PyJWT (idempotent; process-wide, like PyJWT's own
    globals)."""
    global ORIGINAL
    current = PyJWS.__dict__.get("_decode_base64url_segment")
    if isinstance(current, staticmethod) and current.__func__ is not decode_segment:
        ORIGINAL = current.__func__
        PyJWS._decode_base64url_segment = staticmethod(decode_segment)  # type: ignore[method-assign]
    if ORIGINAL_LOAD is not None and PyJWS.__dict__.get("_load") is not load:
        PyJWS._load = load  # type: ignore[method-assign]
