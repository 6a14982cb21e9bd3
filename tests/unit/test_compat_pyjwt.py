"""authsvc.compat.pyjwt: PyJWT's strict segment decoding, faster, accepting exactly the same."""

from __future__ import annotations

import base64
import random

import pytest
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError

from authsvc.compat import pyjwt as compat_pyjwt
from tests.support.helpers import signup


def _outcome(decode, segment: bytes):
    try:
        return ("ok", decode(segment, "payload"))
    except DecodeError as error:
        return ("error", str(error))


def _segments() -> list[bytes]:
    rng = random.Random(6)
    segments: list[bytes] = [b"", b"=", b"==", b"===", b"A", b"AA", b"AAA", b"AAAA", b"!!!!"]
    for length in range(0, 40):
        raw = bytes(rng.randrange(256) for _ in range(length))
        encoded = base64.urlsafe_b64encode(raw)
        unpadded = encoded.rstrip(b"=")
        segments += [encoded, unpadded, unpadded + b"=", unpadded + b"==", unpadded + b"==="]
        if unpadded:
            # Non-canonical trailing bits: the last character one step off.
            segments.append(unpadded[:-1] + bytes([unpadded[-1] ^ 1]))
            # Standard-alphabet characters, and junk of every byte value, anywhere.
            segments.append(unpadded.replace(b"-", b"+").replace(b"_", b"/"))
            for _ in range(12):
                at = rng.randrange(len(unpadded) + 1)
                junk = bytes([rng.randrange(256)])
                segments.append(unpadded[:at] + junk + unpadded[at:])
                segments.append(unpadded[:at] + junk * 4 + unpadded[at:])
        segments.append(unpadded + b"\n")
        segments.append(b" " + unpadded)
    return segments


@pytest.fixture(scope="module")
def original():
    compat_pyjwt.install()
    if compat_pyjwt.ORIGINAL is None:
        pytest.skip("this PyJWT has no _decode_base64url_segment; nothing was replaced")
    return compat_pyjwt.ORIGINAL


def test_installed_in_pyjwt(original):
    assert PyJWS._decode_base64url_segment is compat_pyjwt.decode_segment


def test_same_answer_as_pyjwt_on_valid_and_malformed_segments(original):
    segments = _segments()
    outcomes = [(_outcome(original, s), _outcome(compat_pyjwt.decode_segment, s)) for s in segments]
    assert all(theirs == ours for theirs, ours in outcomes)
    # The corpus exercises both sides, so agreement means something.
    kinds = {theirs[0] for theirs, _ in outcomes}
    assert kinds == {"ok", "error"}


def test_every_byte_outside_the_alphabet_is_rejected(original):
    for byte in range(256):
        segment = b"QUJD" + bytes([byte]) + b"REV"  # 8 characters: canonical when in the alphabet
        theirs = _outcome(original, segment)
        assert _outcome(compat_pyjwt.decode_segment, segment) == theirs
        assert (theirs[0] == "ok") == (byte in compat_pyjwt.BASE64URL_ALPHABET)


def test_junk_after_a_live_signature_is_refused_by_the_api(client):
    token = signup(client)["access_token"]
    assert client.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # (Trailing "=" padding PyJWT accepts on purpose, for AWS ALB tokens: same bytes, same jti.)
    for junk in ("!!!!", "%", "+", "/", "A", "."):
        response = client.get("/me", headers={"Authorization": f"Bearer {token}{junk}"})
        assert response.status_code == 401, junk
        assert response.get_json()["code"] == "invalid_token"


# -- the remembered parse (PyJWS._load) ------------------------------------------------------


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _tokens(client) -> list[str | bytes]:
    live = signup(client)["access_token"]
    header, payload, signature = live.split(".")
    tokens: list[str | bytes] = [live, live.encode(), live + "=", live + "!", live[:-3]]
    tokens += [f"{header}.{payload}", "", ".", "..", "a.b.c", f"{header}..{signature}"]
    for raw_header in (b"[1]", b"not json", b'{"alg":"none"}', b'{"b64":false}', b"\xff"):
        tokens.append(f"{_b64(raw_header).decode()}.{payload}.{signature}")
        tokens.append(f"{_b64(raw_header).decode()}..{signature}")
    return tokens


def _load_outcome(load, token):
    try:
        return ("ok", load(token))
    except DecodeError as error:
        return ("error", str(error))


@pytest.fixture
def original_load():
    compat_pyjwt.install()
    if compat_pyjwt.ORIGINAL_LOAD is None:
        pytest.skip("this PyJWT has no PyJWS._load; nothing was replaced")
    compat_pyjwt.remembered_load.cache_clear()
    return compat_pyjwt.ORIGINAL_LOAD


def test_the_remembered_parse_answers_as_pyjwt_first_time_and_every_time(client, original_load):
    assert PyJWS._load is compat_pyjwt.load
    tokens = _tokens(client)
    parser = PyJWS()
    remembered = compat_pyjwt.remembered_load
    for token in tokens:
        theirs = _load_outcome(lambda t: original_load(parser, t), token)
        hits = remembered.cache_info().hits
        for _ in range(3):  # the first parse, then remembered ones
            assert _load_outcome(parser._load, token) == theirs, token
        if theirs[0] == "ok":
            assert remembered.cache_info().hits == hits + 2, token  # really remembered
    kinds = {_load_outcome(parser._load, token)[0] for token in tokens}
    assert kinds == {"ok", "error"}


def test_each_caller_gets_its_own_header(client, original_load):
    token = signup(client)["access_token"]
    parser = PyJWS()
    header = parser._load(token)[2]
    header["alg"] = "none"
    header["kid"] = "attacker"
    assert parser._load(token)[2] == original_load(parser, token)[2]
    assert PyJWS().get_unverified_header(token)["alg"] == "ES256"
    # Nested values too (PyJWT reads "crit" as a list; a "jwk" header is an object).
    raw_header = b'{"alg":"ES256","crit":["exp"],"jwk":{"kty":"EC"}}'
    _, payload, signature = token.split(".")
    nested = f"{_b64(raw_header).decode()}.{payload}.{signature}"
    header = parser._load(nested)[2]
    header["crit"].append("injected")
    header["jwk"]["kty"] = "injected"
    assert parser._load(nested)[2] == original_load(parser, nested)[2]


def test_long_tokens_are_not_remembered(original_load):
    remembered = compat_pyjwt.remembered_load
    long_token = "e30." + "A" * compat_pyjwt.MAX_REMEMBERED_TOKEN + ".AAAA"
    before = remembered.cache_info()
    PyJWS()._load(long_token)
    after = remembered.cache_info()
    assert (after.hits, after.misses, after.currsize) == (
        before.hits,
        before.misses,
        before.currsize,
    )
