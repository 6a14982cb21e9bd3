"""Attacks on the token-security claims of DESIGN §3, run against the real app.

Every forged, tampered, confused or revoked token must be a 401 problem+json with code
``invalid_token`` (``token_revoked`` for revocation) and the challenge
``WWW-Authenticate: Bearer realm="authsvc", error="invalid_token"``. Each attack starts from the
real tokens that /signup and /login hand out, and the positive controls at the top prove that the
forging machinery itself produces tokens the service accepts, so every rejection below is due to
the one thing the attack changed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID
from flask import Flask
from flask.testing import FlaskClient
from jwt.algorithms import ECAlgorithm, get_default_algorithms
from werkzeug.test import TestResponse

from authsvc.runtime import runtime
from authsvc.security.keys import public_jwk
from tests.support.helpers import (
    PASSWORD,
    assert_invalid_token,
    assert_problem,
    bearer,
    claims_of,
    login,
    sign_with_service_key,
    signup,
)
from tests.support.settings import ISSUER

# Order of the P-256 group (FIPS 186-4 D.1.2.3).
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
LEEWAY = 10
REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "type")
ACCESS_ENDPOINTS = [("GET", "/me"), ("GET", "/sessions"), ("POST", "/password")]
EVIL_AUDIENCE = "another-service"


# -- token plumbing ----------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segment(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def header_of(token: str) -> dict[str, Any]:
    """The JOSE header as sent (PyJWT's get_unverified_header would refuse an unknown crit)."""
    return json.loads(b64url_decode(token.split(".")[0]))


def signing_input(header: dict[str, Any], claims: dict[str, Any]) -> bytes:
    return f"{segment(header)}.{segment(claims)}".encode()


def forge_with_service_key(app: Flask, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Sign ``header.claims`` with the service's real private key, whatever the header says.

    PyJWT refuses to encode some headers (a non-string ``kid``) and always signs with the
    algorithm of ``alg``; this signs with the key's own algorithm, so ``alg`` can lie.
    """
    with app.app_context():
        key = runtime().keyring.signing_key()
    message = signing_input(header, claims)
    signature = get_default_algorithms()[key.alg].sign(message, key.private_key)
    return f"{message.decode()}.{b64url(signature)}"


def access_header(kid: str, **overrides: Any) -> dict[str, Any]:
    return {"alg": "ES256", "typ": "at+jwt", "kid": kid, **overrides}


def resign_access(app: Flask, claims: dict[str, Any], **header: Any) -> str:
    """Real-key signature over chosen claims, with a correct access-token header by default."""
    return sign_with_service_key(app, claims, {"typ": "at+jwt", **header})


def me(client: FlaskClient, token: str) -> TestResponse:
    return client.get("/me", headers=bearer(token))


def call(client: FlaskClient, method: str, path: str, token: str) -> TestResponse:
    body = {"current_password": PASSWORD, "new_password": "a brand new long passphrase"}
    if method == "POST":
        return client.post(path, json=body, headers=bearer(token))
    return client.get(path, headers=bearer(token))


def assert_rejected(response: TestResponse, codes: tuple[str, ...]) -> None:
    """A token 401 whose code is one of ``codes`` (where DESIGN does not fix which one)."""
    assert response.status_code == 401, response.get_data(as_text=True)
    assert_invalid_token(response, response.get_json()["code"])
    assert response.get_json()["code"] in codes


def service_jwk(client: FlaskClient, kid: str) -> dict[str, Any]:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    return next(key for key in response.get_json()["keys"] if key["kid"] == kid)


def malleate(token: str) -> str:
    """The same ES256 JWS with its signature (r, s) replaced by (r, n - s)."""
    head, payload, signature = token.split(".")
    raw = b64url_decode(signature)
    assert len(raw) == 64
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    flipped = r.to_bytes(32, "big") + (P256_N - s).to_bytes(32, "big")
    assert flipped != raw
    return f"{head}.{payload}.{b64url(flipped)}"


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def alice(client: FlaskClient) -> dict[str, Any]:
    """A real signup response: access token, refresh token, user."""
    return signup(client)


@pytest.fixture
def access_claims(alice: dict[str, Any]) -> dict[str, Any]:
    return claims_of(alice["access_token"])


@pytest.fixture
def kid(alice: dict[str, Any]) -> str:
    return header_of(alice["access_token"])["kid"]


@pytest.fixture
def cookie_client(make_app) -> FlaskClient:
    """A client of the same database with cookie mode on (DESIGN §6)."""
    return make_app(AUTHSVC_TOKEN_LOCATION="headers,cookies").test_client()


@pytest.fixture
def attacker_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def attacker_jwk(attacker_key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    return public_jwk(attacker_key.public_key(), "ES256")


class _CountingHandler(BaseHTTPRequestHandler):
    """Serves the attacker's JWKS (and anything else) and counts every request."""

    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        body = json.dumps(self.server.jwks).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def attacker_server(attacker_jwk: dict[str, str]) -> Iterator[ThreadingHTTPServer]:
    """An HTTP server on 127.0.0.1 publishing the attacker's JWKS; ``.hits`` lists requests."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    server.hits = []  # type: ignore[attr-defined]
    server.jwks = {"keys": [attacker_jwk]}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- positive controls: the forging machinery produces tokens the service accepts -------------


def test_control_real_access_token_is_accepted(client, alice):
    response = me(client, alice["access_token"])
    assert response.status_code == 200
    assert response.get_json()["id"] == alice["user"]["id"]


def test_control_resigned_real_claims_are_accepted(client, app, access_claims, kid):
    assert me(client, resign_access(app, access_claims)).status_code == 200
    forged = forge_with_service_key(app, access_header(kid), access_claims)
    assert me(client, forged).status_code == 200


def test_control_leeway_accepts_slightly_expired_and_slightly_early(client, app, access_claims):
    now = int(time.time())
    expired = {**access_claims, "exp": now - 3}
    early = {**access_claims, "nbf": now + 3, "iat": now + 3}
    assert me(client, resign_access(app, expired)).status_code == 200
    assert me(client, resign_access(app, early)).status_code == 200


@pytest.mark.parametrize(
    ("location", "where"),
    [("query_string", "query"), ("json", "json"), ("cookies", "cookie")],
)
def test_control_token_outside_header_is_read_when_opted_in(make_app, alice, location, where):
    """The injections of test_token_outside_header_is_ignored_by_default do reach the app."""
    opted_in = make_app(AUTHSVC_TOKEN_LOCATION=f"headers,{location}").test_client()
    token = alice["access_token"]
    if where == "query":
        response = opted_in.get("/me", query_string={"access_token": token})
    elif where == "json":
        response = opted_in.get("/me", json={"access_token": token})
    else:
        opted_in.set_cookie("access_token_cookie", token)
        response = opted_in.get("/me")
    assert response.status_code == 200, response.get_json()


# -- 1. alg: none -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["empty", "original"])
def test_alg_none_token_is_rejected(client, alice, alg, signature):
    original = alice["access_token"]
    header = {**header_of(original), "alg": alg}
    kept = original.split(".")[2] if signature == "original" else ""
    forged = f"{segment(header)}.{segment(claims_of(original))}.{kept}"
    assert_invalid_token(me(client, forged))


# -- 2. HMAC key confusion with the public key --------------------------------------------------


def _public_key_serialisations(jwks_body: bytes, jwk: dict[str, Any]) -> dict[str, bytes]:
    public_key = ECAlgorithm.from_jwk(jwk)
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pem.endswith(b"\n")
    return {
        "pem": pem,
        "pem-no-newline": pem.rstrip(b"\n"),
        "der": public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "jwk-json": json.dumps(jwk).encode(),
        "jwk-json-compact": json.dumps(jwk, separators=(",", ":")).encode(),
        "jwks-response-body": jwks_body,
        "point-uncompressed": public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ),
        "point-compressed": public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        ),
        "x-b64url": jwk["x"].encode(),
        "y-b64url": jwk["y"].encode(),
        "openssh": public_key.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
    }


SERIALISATIONS = [
    "pem",
    "pem-no-newline",
    "der",
    "jwk-json",
    "jwk-json-compact",
    "jwks-response-body",
    "point-uncompressed",
    "point-compressed",
    "x-b64url",
    "y-b64url",
    "openssh",
]
HMAC_ALGS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def _hmac_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    message = signing_input(header, claims)
    digest = HMAC_ALGS[header["alg"]]
    return f"{message.decode()}.{b64url(hmac.new(secret, message, digest).digest())}"


@pytest.mark.parametrize("serialisation", SERIALISATIONS)
@pytest.mark.parametrize("alg", list(HMAC_ALGS))
def test_hmac_signed_with_public_key_is_rejected(client, access_claims, kid, alg, serialisation):
    body = client.get("/.well-known/jwks.json").get_data()
    jwk = service_jwk(client, kid)
    secret = _public_key_serialisations(body, jwk)[serialisation]
    # Sanity: the key really is the service's public key (the one that verifies its tokens).
    assert jwt.PyJWK(jwk).key_id == kid
    forged = _hmac_token(access_header(kid, alg=alg), access_claims, secret)
    assert_invalid_token(me(client, forged))


@pytest.mark.parametrize("kid_header", ["absent", "attacker"])
def test_hmac_signed_with_pem_without_service_kid_is_rejected(
    client, access_claims, kid, kid_header
):
    jwk = service_jwk(client, kid)
    pem = _public_key_serialisations(b"", jwk)["pem"]
    header = access_header("attacker-kid", alg="HS256")
    if kid_header == "absent":
        del header["kid"]
    assert_invalid_token(me(client, _hmac_token(header, access_claims, pem)))


def _other_key_serialisations(jwks_body: bytes, jwk: dict[str, Any]) -> dict[str, bytes]:
    """What an attacker can derive from an RSA or Ed25519 JWK (the classic RS256/HS256 case)."""
    public_key = jwt.PyJWK(jwk).key
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = public_key.public_bytes(serialization.Encoding.PEM, spki)
    found = {
        "pem": pem,
        "pem-no-newline": pem.rstrip(b"\n"),
        "der": public_key.public_bytes(serialization.Encoding.DER, spki),
        "openssh": public_key.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
        "jwk-json": json.dumps(jwk).encode(),
        "jwk-json-compact": json.dumps(jwk, separators=(",", ":")).encode(),
        "jwks-response-body": jwks_body,
    }
    if jwk["kty"] == "RSA":
        pkcs1 = serialization.PublicFormat.PKCS1
        found["pkcs1-pem"] = public_key.public_bytes(serialization.Encoding.PEM, pkcs1)
        found["pkcs1-der"] = public_key.public_bytes(serialization.Encoding.DER, pkcs1)
        found["n-bytes"] = b64url_decode(jwk["n"])
        found["n-b64url"] = jwk["n"].encode()
    else:
        found["raw"] = b64url_decode(jwk["x"])
        found["x-b64url"] = jwk["x"].encode()
    return found


@pytest.mark.parametrize("signing_alg", ["RS256", "EdDSA"])
def test_hmac_signed_with_rsa_or_eddsa_public_key_is_rejected(make_app, signing_alg):
    client = make_app(AUTHSVC_SIGNING_ALG=signing_alg).test_client()
    tokens = signup(client)
    claims, kid = claims_of(tokens["access_token"]), header_of(tokens["access_token"])["kid"]
    assert header_of(tokens["access_token"])["alg"] == signing_alg
    body = client.get("/.well-known/jwks.json").get_data()
    secrets = _other_key_serialisations(body, service_jwk(client, kid))
    for alg in HMAC_ALGS:
        for name, secret in secrets.items():
            response = me(client, _hmac_token(access_header(kid, alg=alg), claims, secret))
            assert response.status_code == 401, (alg, name)
            assert_invalid_token(response)
    # Control: this service's real token for that key is accepted.
    assert me(client, tokens["access_token"]).status_code == 200


# -- 3. tampered payload, original signature kept -----------------------------------------------


def _tamper(token: str, changes: dict[str, Any]) -> str:
    head, _, signature = token.split(".")
    return f"{head}.{segment({**claims_of(token), **changes})}.{signature}"


@pytest.mark.parametrize("attack", ["sub-other-user", "roles-admin", "exp-extended", "sid"])
def test_tampered_payload_with_original_signature_is_rejected(client, alice, attack):
    bob = signup(client, "bob")
    claims = claims_of(alice["access_token"])
    changes = {
        "sub-other-user": {"sub": bob["user"]["id"]},
        "roles-admin": {"roles": [*claims["roles"], "admin"]},
        "exp-extended": {"exp": claims["exp"] + 86400},
        "sid": {"sid": claims_of(bob["access_token"])["sid"]},
    }[attack]
    assert_invalid_token(me(client, _tamper(alice["access_token"], changes)))
    # The untampered token still works: the rejection is the tampering's.
    assert me(client, alice["access_token"]).status_code == 200


def test_same_claims_reencoded_with_original_signature_is_rejected(client, alice):
    """Identical claims in different JSON bytes: the signature covers bytes, not meaning."""
    head, _, signature = alice["access_token"].split(".")
    payload = b64url(json.dumps(claims_of(alice["access_token"]), indent=1).encode())
    assert_invalid_token(me(client, f"{head}.{payload}.{signature}"))


# -- 4. the attacker's own key, offered through the header --------------------------------------


def _attacker_token(
    key: ec.EllipticCurvePrivateKey, claims: dict[str, Any], header: dict[str, Any]
) -> str:
    return jwt.encode(claims, key, algorithm="ES256", headers={"typ": "at+jwt", **header})


@pytest.mark.parametrize("which_kid", ["attacker", "service"])
def test_embedded_jwk_header_is_not_trusted(
    client, access_claims, kid, attacker_key, attacker_jwk, which_kid
):
    header = {
        "kid": attacker_jwk["kid"] if which_kid == "attacker" else kid,
        "jwk": attacker_jwk,
    }
    forged = _attacker_token(attacker_key, access_claims, header)
    # The attacker's token verifies with the key it carries, so only trust in `jwk` could pass it.
    jwt.decode(
        forged,
        jwt.PyJWK(attacker_jwk).key,
        algorithms=["ES256"],
        audience=access_claims["aud"],
        issuer=ISSUER,
    )
    assert_invalid_token(me(client, forged))


@pytest.mark.parametrize("member", ["jku", "x5u"])
@pytest.mark.parametrize("which_kid", ["attacker", "service"])
def test_jku_and_x5u_headers_are_never_fetched(
    client, access_claims, kid, attacker_key, attacker_jwk, attacker_server, member, which_kid
):
    host, port = attacker_server.server_address[:2]
    header = {
        "kid": attacker_jwk["kid"] if which_kid == "attacker" else kid,
        member: f"http://{host}:{port}/jwks.json",
    }
    forged = _attacker_token(attacker_key, access_claims, header)
    assert_invalid_token(me(client, forged))
    assert attacker_server.hits == []  # type: ignore[attr-defined]


def _self_signed_certificate(key: ec.EllipticCurvePrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auth.test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


@pytest.mark.parametrize("chain", ["garbage", "not-base64", "attacker-self-signed"])
@pytest.mark.parametrize("which_kid", ["attacker", "service"])
def test_x5c_header_is_not_trusted(
    client, access_claims, kid, attacker_key, attacker_jwk, chain, which_kid
):
    x5c = {
        "garbage": [base64.b64encode(b"definitely not a certificate").decode()],
        "not-base64": ["!!!***"],
        "attacker-self-signed": [_self_signed_certificate(attacker_key)],
    }[chain]
    header = {"kid": attacker_jwk["kid"] if which_kid == "attacker" else kid, "x5c": x5c}
    assert_invalid_token(me(client, _attacker_token(attacker_key, access_claims, header)))


# -- 5. token-type confusion --------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ACCESS_ENDPOINTS)
def test_refresh_token_is_not_an_access_token(client, alice, method, path):
    assert_invalid_token(call(client, method, path, alice["refresh_token"]))
    # The password endpoint did not act on it.
    login(client)


def test_access_token_in_authorization_header_cannot_refresh(client, alice):
    assert_invalid_token(client.post("/refresh", headers=bearer(alice["access_token"])))


def test_access_token_in_json_body_cannot_refresh(client, alice):
    response = client.post("/refresh", json={"refresh_token": alice["access_token"]})
    assert_invalid_token(response)
    # Control: the same channel does take a real refresh token.
    ok = client.post("/refresh", json={"refresh_token": alice["refresh_token"]})
    assert ok.status_code == 200


# -- 6. ECDSA signature malleability vs revocation ----------------------------------------------


def test_malleated_access_token_of_logged_out_session_is_revoked(client, alice):
    tokens = login(client)
    access = tokens["access_token"]
    claims = claims_of(access)
    assert client.post("/logout", headers=bearer(access)).status_code == 204
    malleated = malleate(access)
    assert malleated != access
    # The malleated signature is a different string but still cryptographically valid.
    jwk = service_jwk(client, header_of(access)["kid"])
    verified = jwt.decode(
        malleated,
        jwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience=claims["aud"],
        issuer=ISSUER,
        leeway=LEEWAY,
        options={"require": list(REQUIRED_CLAIMS), "verify_exp": True, "verify_nbf": True},
    )
    assert verified == claims
    assert_invalid_token(me(client, access), "token_revoked")
    assert_invalid_token(me(client, malleated), "token_revoked")
    # The other session is untouched.
    assert me(client, alice["access_token"]).status_code == 200


def test_refresh_token_of_logged_out_session_stays_revoked_in_any_encoding(client, alice):
    """Refresh tokens are HS256 (DESIGN §3): there is no (r, n - s) twin to try, and every other
    encoding of the signature (trailing base64url bits, a flipped byte) is refused outright;
    the token itself is recognised by its session, never by its text."""
    tokens = login(client)
    refresh = tokens["refresh_token"]
    assert header_of(refresh)["alg"] == "HS256"
    assert client.post("/logout", headers=bearer(tokens["access_token"])).status_code == 204
    head, payload, signature = refresh.split(".")
    raw = b64url_decode(signature)
    flipped = f"{head}.{payload}.{b64url(bytes([raw[0] ^ 1]) + raw[1:])}"
    # 32 bytes encode to 43 characters, the last of which carries 2 spare bits (always 0 as
    # issued): setting one gives text that a lax decoder maps to the same bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert alphabet.index(signature[-1]) % 4 == 0
    twin = f"{head}.{payload}.{signature[:-1]}{alphabet[alphabet.index(signature[-1]) + 1]}"
    assert b64url_decode(twin.split(".")[2] + "=") == raw  # really the same signature bytes
    assert_invalid_token(client.post("/refresh", headers=bearer(refresh)), "token_revoked")
    for forged in (flipped, twin):
        assert_invalid_token(client.post("/refresh", headers=bearer(forged)))


def test_der_encoded_signature_is_rejected(client, alice):
    """JWS ECDSA signatures are raw r || s; the DER form of the same signature is not accepted."""
    head, payload, signature = alice["access_token"].split(".")
    raw = b64url_decode(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    assert decode_dss_signature(der) == (
        int.from_bytes(raw[:32], "big"),
        int.from_bytes(raw[32:], "big"),
    )
    assert_invalid_token(me(client, f"{head}.{payload}.{b64url(der)}"))


# -- 7. crit -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"crit": ["exp-ext"], "exp-ext": 1}, id="unknown-crit"),
        pytest.param({"crit": ["exp-ext"]}, id="unknown-crit-absent-member"),
        pytest.param({"crit": []}, id="empty-crit"),
        pytest.param({"crit": "exp-ext", "exp-ext": 1}, id="crit-not-a-list"),
        pytest.param({"crit": [1], "1": 1}, id="crit-not-strings"),
        pytest.param({"crit": ["b64"], "b64": False}, id="unencoded-payload"),
    ],
)
def test_crit_header_is_rejected(client, app, access_claims, kid, extra):
    forged = forge_with_service_key(app, access_header(kid, **extra), access_claims)
    assert_invalid_token(me(client, forged))


def test_unknown_crit_signed_by_helper_is_rejected(client, app, access_claims):
    forged = resign_access(app, access_claims, crit=["exp-ext"], **{"exp-ext": 1})
    assert header_of(forged)["crit"] == ["exp-ext"]
    assert_invalid_token(me(client, forged))


# -- 8. validly signed tokens with the wrong structure ------------------------------------------


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_access_token_missing_a_required_claim_is_rejected(client, app, access_claims, claim):
    claims = {name: value for name, value in access_claims.items() if name != claim}
    assert_invalid_token(me(client, resign_access(app, claims)))


def _shift(claims: dict[str, Any], seconds: int) -> dict[str, Any]:
    return {**claims, **{name: claims[name] + seconds for name in ("iat", "nbf", "exp")}}


def _claim_attacks(claims: dict[str, Any]) -> dict[str, dict[str, Any]]:
    now = int(time.time())
    life = claims["exp"] - claims["iat"]
    return {
        "wrong-iss": {**claims, "iss": "https://evil.test"},
        "iss-trailing-slash": {**claims, "iss": ISSUER + "/"},
        "iss-not-a-string": {**claims, "iss": [ISSUER]},
        "wrong-aud": {**claims, "aud": EVIL_AUDIENCE},
        "wrong-aud-list": {**claims, "aud": [EVIL_AUDIENCE]},
        "aud-is-issuer": {**claims, "aud": ISSUER},
        "aud-list-with-issuer": {**claims, "aud": [claims["aud"], ISSUER]},
        "expired-beyond-leeway": _shift(claims, now - LEEWAY - 5 - claims["exp"]),
        "expired-long-ago": _shift(claims, -2 * life),
        "nbf-beyond-leeway": {**claims, "nbf": now + LEEWAY + 20},
        "iat-beyond-leeway": {**claims, "iat": now + LEEWAY + 20},
        "sub-not-a-string": {**claims, "sub": 1},
        "jti-not-a-string": {**claims, "jti": 1},
        "sid-not-a-uuid": {**claims, "sid": "not-a-session"},
        "type-refresh": {**claims, "type": "refresh", "gen": 0},
        "type-unknown": {**claims, "type": "id"},
    }


CLAIM_ATTACKS = list(_claim_attacks({"iat": 0, "nbf": 0, "exp": 1, "aud": "a"}))


@pytest.mark.parametrize("attack", CLAIM_ATTACKS)
def test_access_token_with_bad_claims_is_rejected(client, app, access_claims, kid, attack):
    # Signed by hand: PyJWT will not even encode some of these (a non-string iss).
    claims = _claim_attacks(access_claims)[attack]
    assert_invalid_token(me(client, forge_with_service_key(app, access_header(kid), claims)))


@pytest.mark.parametrize("typ", ["JWT", "jwt", "refresh", None])
def test_access_token_without_at_jwt_typ_is_rejected(client, app, access_claims, typ):
    forged = resign_access(app, access_claims, typ=typ)
    assert header_of(forged).get("typ") == typ
    assert_invalid_token(me(client, forged))


def test_access_token_naming_a_nonexistent_session_is_rejected(client, app, access_claims):
    forged = resign_access(app, {**access_claims, "sid": str(uuid.uuid4())})
    # DESIGN does not say whether a vanished session is "invalid" or "revoked"; both are 401.
    assert_rejected(me(client, forged), ("invalid_token", "token_revoked"))


@pytest.mark.parametrize("swap", ["bob-sub-alice-sid", "alice-sub-bob-sid"])
def test_access_token_mixing_users_and_sessions_is_rejected(client, app, alice, swap):
    bob = signup(client, "bob")
    alice_claims, bob_claims = claims_of(alice["access_token"]), claims_of(bob["access_token"])
    if swap == "bob-sub-alice-sid":
        claims = {**alice_claims, "sub": bob_claims["sub"]}
    else:
        claims = {**alice_claims, "sid": bob_claims["sid"]}
    assert_rejected(me(client, resign_access(app, claims)), ("invalid_token", "token_revoked"))


@pytest.mark.parametrize("alg", ["RS256", "EdDSA", "ES384", "ES512", "PS256"])
def test_alg_header_not_matching_the_key_is_rejected(client, app, access_claims, kid, alg):
    forged = forge_with_service_key(app, access_header(kid, alg=alg), access_claims)
    assert_invalid_token(me(client, forged))


@pytest.mark.parametrize(
    "bad_kid",
    [
        pytest.param("unknown-kid", id="unknown"),
        pytest.param("", id="empty"),
        pytest.param(123, id="int"),
        pytest.param(None, id="null"),
        pytest.param(["KID"], id="list"),
        pytest.param({"kid": "KID"}, id="object"),
        pytest.param("absent", id="absent"),
    ],
)
def test_unknown_or_malformed_kid_is_rejected(client, app, access_claims, kid, bad_kid):
    header = access_header(kid)
    if bad_kid == "absent":
        del header["kid"]
    else:
        # "KID" stands for the service's real kid, wrapped in the wrong JSON type.
        header["kid"] = json.loads(json.dumps(bad_kid).replace('"KID"', json.dumps(kid)))
    assert_invalid_token(me(client, forge_with_service_key(app, header, access_claims)))


def _garbage(token: str) -> dict[str, str]:
    head, payload, signature = token.split(".")
    return {
        "abc": "abc",
        "a.b.c": "a.b.c",
        "two-segments": f"{head}.{payload}",
        "extra-segment": f"{token}.{signature}",
        "five-segments-jwe-shape": f"{head}.{payload}.{signature}.{signature}.{signature}",
        "non-base64": "!!!.@@@.###",
        "truncated": token[:-10],
        "signature-missing": f"{head}.{payload}.",
        "signature-extra-byte": f"{head}.{payload}.{b64url(b64url_decode(signature) + b'x')}",
        "header-not-json": f"{b64url(b'not json')}.{payload}.{signature}",
        "header-json-array": f"{b64url(b'[1]')}.{payload}.{signature}",
        "payload-not-json": f"{head}.{b64url(b'not json')}.{signature}",
        "padded-base64": f"{head}==.{payload}.{signature}",
        "dots": "..",
    }


GARBAGE = list(_garbage("aaaa.aaaa.aaaa"))


@pytest.mark.parametrize("kind", GARBAGE)
def test_garbage_token_is_rejected(client, alice, kind):
    assert_invalid_token(me(client, _garbage(alice["access_token"])[kind]))


def test_payload_not_json_but_validly_signed_is_rejected(client, app, kid):
    header = access_header(kid)
    with app.app_context():
        key = runtime().keyring.signing_key()
    message = f"{segment(header)}.{b64url(b'[1, 2, 3]')}".encode()
    signature = get_default_algorithms()[key.alg].sign(message, key.private_key)
    assert_invalid_token(me(client, f"{message.decode()}.{b64url(signature)}"))


def _assert_missing_token(response: TestResponse) -> None:
    assert_problem(response, 401, "missing_token")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'


@pytest.mark.parametrize(
    ("method", "path", "where"),
    [
        ("GET", "/me", "query"),
        ("GET", "/sessions", "query"),
        ("GET", "/me", "json"),
        ("POST", "/logout", "json"),
        ("POST", "/logout", "query"),
        ("POST", "/password", "json"),
        ("GET", "/me", "cookie"),
        ("POST", "/logout", "cookie"),
    ],
)
def test_token_outside_header_is_ignored_by_default(client, alice, method, path, where):
    token = alice["access_token"]
    kwargs: dict[str, Any] = {}
    if where == "query":
        kwargs["query_string"] = {"access_token": token}
    elif where == "json":
        kwargs["json"] = {"access_token": token}
    else:
        client.set_cookie("access_token_cookie", token)
    response = client.open(path, method=method, **kwargs)
    _assert_missing_token(response)
    # Nothing happened to the session: the token still works from the header.
    assert me(client, token).status_code == 200


def _send_refresh(client: FlaskClient, token: str, where: str) -> TestResponse:
    """POST /refresh with the refresh token in the query string, or as the refresh cookie with
    its matching double-submit CSRF header (as a cookie-mode browser would send it)."""
    if where == "query":
        return client.post("/refresh", query_string={"refresh_token": token})
    client.set_cookie("refresh_token_cookie", token, path="/refresh")
    return client.post("/refresh", headers={"X-CSRF-TOKEN": claims_of(token)["csrf"]})


@pytest.mark.parametrize("where", ["query", "cookie"])
def test_refresh_token_outside_header_and_json_is_ignored_by_default(client, cookie_client, where):
    # Issued in cookie mode, so it carries the csrf claim a cookie-mode request needs.
    token = signup(cookie_client)["refresh_token"]
    _assert_missing_token(_send_refresh(client, token, where))


def test_control_refresh_cookie_is_read_in_cookie_mode(cookie_client):
    """The refresh-cookie injection above is not vacuous: in cookie mode it refreshes."""
    token = signup(cookie_client)["refresh_token"]
    assert _send_refresh(cookie_client, token, "cookie").status_code == 200


# -- cookie mode: cross-site requests carrying the cookie but no matching CSRF header ------------


def _csrf_attack(cookie_client: FlaskClient, csrf: str) -> tuple[TestResponse, dict[str, Any]]:
    """A cross-site POST /logout: the browser attaches the access cookie, the attacker cannot
    read the csrf cookie so the X-CSRF-TOKEN header is missing or wrong."""
    tokens = signup(cookie_client)
    cookie_client.set_cookie("access_token_cookie", tokens["access_token"])
    headers = {
        "missing": {},
        "wrong": {"X-CSRF-TOKEN": str(uuid.uuid4())},
        "refresh-csrf": {"X-CSRF-TOKEN": claims_of(tokens["refresh_token"])["csrf"]},
    }[csrf]
    return cookie_client.post("/logout", headers=headers), tokens


CSRF_ATTACKS = ["missing", "wrong", "refresh-csrf"]


def test_control_cookie_request_with_matching_csrf_is_accepted(cookie_client):
    tokens = signup(cookie_client)
    cookie_client.set_cookie("access_token_cookie", tokens["access_token"])
    csrf = claims_of(tokens["access_token"])["csrf"]
    assert cookie_client.post("/logout", headers={"X-CSRF-TOKEN": csrf}).status_code == 204
    assert_invalid_token(me(cookie_client, tokens["access_token"]), "token_revoked")


@pytest.mark.parametrize("csrf", CSRF_ATTACKS)
def test_cookie_request_without_matching_csrf_is_refused(cookie_client, csrf):
    response, tokens = _csrf_attack(cookie_client, csrf)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    # The forged request did nothing: the session is still live.
    assert me(cookie_client, tokens["access_token"]).status_code == 200


@pytest.mark.parametrize("csrf", CSRF_ATTACKS)
def test_cookie_request_without_matching_csrf_is_invalid_csrf(cookie_client, csrf):
    response, _ = _csrf_attack(cookie_client, csrf)
    assert_problem(response, 401, "invalid_csrf")


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": "9999999999"},
        {"iat": "1"},
        {"exp": 9999999999.5},
        {"roles": "admin"},
        {"roles": [1]},
    ],
    ids=["exp-string", "iat-string", "exp-fraction", "roles-string", "roles-not-strings"],
)
def test_validly_signed_access_token_with_wrong_claim_types_is_refused(app, client, changes):
    tokens = signup(client)
    claims = {**claims_of(tokens["access_token"]), **changes}
    token = sign_with_service_key(app, claims, {"typ": "at+jwt"})
    assert_invalid_token(client.get("/me", headers=bearer(token)))


def test_refresh_token_with_access_typ_header_is_refused(app, client):
    tokens = signup(client)
    token = sign_with_service_key(app, claims_of(tokens["refresh_token"]), {"typ": "at+jwt"})
    assert_invalid_token(client.post("/refresh", headers=bearer(token)))


@pytest.mark.parametrize(
    "aud",
    [{"x": 1}, [{"x": 1}], [["authsvc"]], 7, None],
    ids=["object", "list-of-object", "nested-list", "number", "null"],
)
def test_unsigned_token_with_odd_audience_types_is_401_not_500(client, aud):
    """The shape check runs before the signature: odd types must be refused, never crash."""
    tokens = signup(client)
    header, _payload, signature = tokens["access_token"].split(".")
    claims = {**claims_of(tokens["access_token"]), "aud": aud}
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    response = client.get("/me", headers=bearer(f"{header}.{forged}.{signature}"))
    assert_invalid_token(response)
