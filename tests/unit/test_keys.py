"""authsvc.security.keys: key generation, public JWK, encryption at rest, key ring and JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time

import jwt
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy import func, select

from authsvc.extensions import db
from authsvc.models import SigningKey
from authsvc.runtime import runtime
from authsvc.security.keys import KeyEncryptor, KeyRing, generate_private_key, public_jwk
from tests.support.helpers import bearer, claims_of, signup
from tests.support.settings import ISSUER, TEST_SECRET

ALGORITHMS = ["ES256", "RS256", "EdDSA"]
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth", "r", "t"}
PUBLIC_MEMBERS = {"kty", "crv", "x", "y", "n", "e", "kid", "use", "alg"}


# -- an independent RFC 7638 thumbprint ------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_uint(value: int) -> str:
    return b64url(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def thumbprint(members: dict[str, str]) -> str:
    """RFC 7638 §3: SHA-256 of the required members, sorted, no whitespace."""
    canonical = "{" + ",".join(f'"{name}":"{members[name]}"' for name in sorted(members)) + "}"
    return b64url(hashlib.sha256(canonical.encode()).digest())


def required_members(public_key) -> dict[str, str]:
    """The RFC 7638 required members, computed from the key's numbers (not from our JWK)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        numbers = public_key.public_numbers()
        return {
            "crv": "P-256",
            "kty": "EC",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {"e": b64url_uint(numbers.e), "kty": "RSA", "n": b64url_uint(numbers.n)}
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}


def test_thumbprint_helper_matches_the_rfc_7638_example():
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvzq"
        "Y368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu"
        "0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    assert thumbprint({"e": "AQAB", "kty": "RSA", "n": n}) == (
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    )


# -- generation and the public JWK -----------------------------------------------------------------


@pytest.fixture(scope="module", params=ALGORITHMS)
def generated(request):
    alg = request.param
    private_key = generate_private_key(alg)
    return alg, private_key, public_jwk(private_key.public_key(), alg)


def test_generated_key_types(generated):
    alg, private_key, _ = generated
    if alg == "ES256":
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        assert isinstance(private_key.curve, ec.SECP256R1)
    elif alg == "RS256":
        assert isinstance(private_key, rsa.RSAPrivateKey)
        assert private_key.key_size >= 2048
        assert private_key.public_key().public_numbers().e == 65537
    else:
        assert isinstance(private_key, ed25519.Ed25519PrivateKey)


def test_generated_keys_are_distinct():
    for alg in ALGORITHMS:
        one = public_jwk(generate_private_key(alg).public_key(), alg)
        two = public_jwk(generate_private_key(alg).public_key(), alg)
        assert one["kid"] != two["kid"]


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="HS256"):
        generate_private_key("HS256")


def test_jwk_has_only_public_members(generated):
    _, _, jwk = generated
    assert not PRIVATE_MEMBERS & set(jwk), jwk
    assert set(jwk) <= PUBLIC_MEMBERS, jwk


def test_jwk_type_use_and_alg(generated):
    alg, _, jwk = generated
    expected = {
        "ES256": {"kty": "EC", "crv": "P-256"},
        "RS256": {"kty": "RSA"},
        "EdDSA": {"kty": "OKP", "crv": "Ed25519"},
    }[alg]
    assert {name: jwk.get(name) for name in ("kty", "crv") if name in jwk} == expected
    assert jwk["use"] == "sig"
    assert jwk["alg"] == alg


def test_jwk_members_and_kid_are_the_rfc_7638_thumbprint(generated):
    _, private_key, jwk = generated
    members = required_members(private_key.public_key())
    assert {name: jwk[name] for name in members} == members
    assert jwk["kid"] == thumbprint(members)


def test_token_signed_with_the_private_key_verifies_with_the_jwk(generated):
    alg, private_key, jwk = generated
    token = jwt.encode(
        {"sub": "user-1", "aud": "authsvc"}, private_key, algorithm=alg, headers={"kid": jwk["kid"]}
    )
    key = jwt.PyJWK(jwk)
    assert key.key_id == jwk["kid"]
    claims = jwt.decode(token, key, algorithms=[alg], audience="authsvc")
    assert claims["sub"] == "user-1"
    # A token from another key of the same type does not verify with this JWK.
    other = jwt.encode({"sub": "user-1"}, generate_private_key(alg), algorithm=alg)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(other, key, algorithms=[alg])


def test_jwk_round_trips_through_json(generated):
    alg, private_key, jwk = generated
    published = json.loads(json.dumps({"keys": [jwk]}))
    key_set = jwt.PyJWKSet.from_dict(published)
    token = jwt.encode({"sub": "x"}, private_key, algorithm=alg, headers={"kid": jwk["kid"]})
    assert jwt.decode(token, key_set[jwk["kid"]], algorithms=[alg])["sub"] == "x"


# -- encryption at rest ----------------------------------------------------------------------------


def private_bytes(private_key) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_encryptor_round_trips(generated):
    _, private_key, jwk = generated
    encryptor = KeyEncryptor(TEST_SECRET)
    blob = encryptor.encrypt(private_key, jwk["kid"])
    restored = KeyEncryptor(TEST_SECRET).decrypt(blob, jwk["kid"])  # a new process, same secret
    assert private_bytes(restored) == private_bytes(private_key)


def test_ciphertext_holds_no_key_material_in_the_clear(generated):
    _, private_key, jwk = generated
    blob = KeyEncryptor(TEST_SECRET).encrypt(private_key, jwk["kid"])
    assert b"-----BEGIN" not in blob
    assert b"PRIVATE KEY" not in blob
    assert private_bytes(private_key) not in blob
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(blob, password=None)
    with pytest.raises(ValueError):
        serialization.load_der_private_key(blob, password=None)


def test_each_encryption_uses_a_fresh_nonce(generated):
    _, private_key, jwk = generated
    encryptor = KeyEncryptor(TEST_SECRET)
    assert encryptor.encrypt(private_key, jwk["kid"]) != encryptor.encrypt(private_key, jwk["kid"])


def test_decrypt_with_another_secret_fails(generated):
    _, private_key, jwk = generated
    blob = KeyEncryptor(TEST_SECRET).encrypt(private_key, jwk["kid"])
    with pytest.raises(InvalidTag):
        KeyEncryptor(TEST_SECRET + "x").decrypt(blob, jwk["kid"])


def test_decrypt_under_another_kid_fails(generated):
    # The kid is associated data: a row's ciphertext cannot be moved under another kid.
    alg, private_key, jwk = generated
    blob = KeyEncryptor(TEST_SECRET).encrypt(private_key, jwk["kid"])
    other_kid = public_jwk(generate_private_key(alg).public_key(), alg)["kid"]
    with pytest.raises(InvalidTag):
        KeyEncryptor(TEST_SECRET).decrypt(blob, other_kid)


def test_tampering_with_any_byte_fails():
    private_key = generate_private_key("ES256")
    kid = public_jwk(private_key.public_key(), "ES256")["kid"]
    encryptor = KeyEncryptor(TEST_SECRET)
    blob = encryptor.encrypt(private_key, kid)
    # The nonce, the first and a middle ciphertext byte, the last byte of the tag.
    for position in (0, 11, 12, len(blob) // 2, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(InvalidTag):
            encryptor.decrypt(bytes(tampered), kid)
    with pytest.raises(InvalidTag):
        encryptor.decrypt(blob[:-1], kid)


# -- the key ring with a database ------------------------------------------------------------------


def active_rows(app) -> list[SigningKey]:
    with app.app_context():
        return list(db.session.scalars(select(SigningKey).where(SigningKey.state == "active")))


def key_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(SigningKey))


def test_signing_key_bootstraps_one_active_key(app):
    assert key_count(app) == 0
    with app.app_context():
        first = runtime().keyring.signing_key()
        again = runtime().keyring.signing_key()
    assert first.kid == again.kid
    assert first.state == "active"
    assert first.alg == "ES256"
    assert first.jwk["kid"] == first.kid
    rows = active_rows(app)
    assert [row.kid for row in rows] == [first.kid]
    assert key_count(app) == 1
    # A fresh key ring (another worker of the same replica) finds the same key.
    with app.app_context():
        other = KeyRing(secret_key=TEST_SECRET, policy=runtime().keyring.policy).signing_key()
    assert other.kid == first.kid
    assert key_count(app) == 1


def test_the_stored_private_key_is_encrypted(app):
    with app.app_context():
        key = runtime().keyring.signing_key()
        row = db.session.get(SigningKey, key.kid)
        blob = bytes(row.private_key_encrypted)
        assert row.public_jwk == key.jwk
    assert b"-----BEGIN" not in blob
    assert b"PRIVATE KEY" not in blob
    assert private_bytes(key.private_key) not in blob
    # It is the configured secret that unlocks it, bound to this kid.
    restored = KeyEncryptor(TEST_SECRET).decrypt(blob, key.kid)
    assert private_bytes(restored) == private_bytes(key.private_key)
    with pytest.raises(InvalidTag):
        KeyEncryptor("another-secret-0123456789-abcdefghijklmnop").decrypt(blob, key.kid)


def test_stored_public_jwk_has_only_public_members(app):
    with app.app_context():
        runtime().keyring.signing_key()
        jwks = [row.public_jwk for row in db.session.scalars(select(SigningKey))]
    for jwk in jwks:
        assert not PRIVATE_MEMBERS & set(jwk)


def test_two_replicas_bootstrapping_create_one_key(make_app):
    one, two = make_app(), make_app()
    with one.app_context():
        kid_one = runtime().keyring.signing_key().kid
    with two.app_context():
        kid_two = runtime().keyring.signing_key().kid
    assert kid_one == kid_two
    assert len(active_rows(one)) == 1
    assert key_count(one) == 1


def test_two_replicas_bootstrapping_at_the_same_moment_create_one_key(make_app):
    apps = [make_app() for _ in range(4)]
    barrier = threading.Barrier(len(apps))
    kids: list[str] = []
    errors: list[BaseException] = []

    def bootstrap(app):
        try:
            with app.app_context():
                barrier.wait(timeout=10)
                kids.append(runtime().keyring.signing_key().kid)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=bootstrap, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(kids) == len(apps)
    assert len(set(kids)) == 1
    assert len(active_rows(apps[0])) == 1
    assert key_count(apps[0]) == 1


def test_a_replica_that_decided_on_a_stale_view_still_ends_with_one_key(make_app):
    """The collision path: a second replica inserts after the first already committed."""
    one, two = make_app(), make_app()
    with one.app_context():
        kid = runtime().keyring.signing_key().kid
    with two.app_context():
        ring = runtime().keyring
        ring.activate_new_key(replacing=None)  # what a replica racing the first one does
        assert ring.signing_key().kid == kid
    assert len(active_rows(one)) == 1
    assert key_count(one) == 1


def test_jwks_publishes_the_active_key_with_only_public_members(app, client):
    with app.app_context():
        key = runtime().keyring.signing_key()
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    keys = response.get_json()["keys"]
    assert [jwk["kid"] for jwk in keys] == [key.kid]
    (jwk,) = keys
    assert set(jwk) <= PUBLIC_MEMBERS
    assert not PRIVATE_MEMBERS & set(jwk)
    assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == ("EC", "P-256", "sig", "ES256")
    assert jwk["kid"] == thumbprint(required_members(key.public_key))


def test_jwks_cache_lifetime_follows_the_setting(make_app):
    app = make_app(AUTHSVC_JWKS_MAX_AGE="60")
    with app.app_context():
        runtime().keyring.signing_key()
    response = app.test_client().get("/.well-known/jwks.json")
    assert response.headers["Cache-Control"] == "public, max-age=60"


def test_issued_tokens_verify_with_the_published_jwks(client):
    body = signup(client)
    token = body["access_token"]
    header = jwt.get_unverified_header(token)
    keys = client.get("/.well-known/jwks.json").get_json()["keys"]
    jwk = next(jwk for jwk in keys if jwk["kid"] == header["kid"])
    assert header["alg"] == jwk["alg"] == "ES256"
    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk),
        algorithms=[jwk["alg"]],
        audience="authsvc",
        issuer=ISSUER,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    assert claims["sub"] == body["user"]["id"]


@pytest.mark.parametrize("alg", ["RS256", "EdDSA"])
def test_configured_algorithm_signs_tokens(make_app, alg):
    app = make_app(AUTHSVC_SIGNING_ALG=alg)
    client = app.test_client()
    token = signup(client)["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg
    (jwk,) = client.get("/.well-known/jwks.json").get_json()["keys"]
    assert jwk["kid"] == header["kid"] and jwk["alg"] == alg
    assert not PRIVATE_MEMBERS & set(jwk)
    assert jwt.decode(token, jwt.PyJWK(jwk), algorithms=[alg], audience="authsvc")
    assert client.get("/me", headers=bearer(token)).status_code == 200


def test_changing_the_algorithm_retires_the_old_key_and_keeps_it_verifying(make_app):
    old_app = make_app()  # ES256
    old_token = signup(old_app.test_client())["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    assert jwt.get_unverified_header(old_token)["alg"] == "ES256"

    new_app = make_app(AUTHSVC_SIGNING_ALG="RS256")
    client = new_app.test_client()
    new_token = signup(client, username="bob")["access_token"]
    new_header = jwt.get_unverified_header(new_token)
    assert new_header["alg"] == "RS256"
    assert new_header["kid"] != old_kid

    with new_app.app_context():
        states = {row.kid: (row.alg, row.state) for row in db.session.scalars(select(SigningKey))}
    assert states == {old_kid: ("ES256", "retired"), new_header["kid"]: ("RS256", "active")}

    # Both keys are published: the new one signs, the old one still verifies.
    keys = {jwk["kid"]: jwk for jwk in client.get("/.well-known/jwks.json").get_json()["keys"]}
    assert set(keys) == {old_kid, new_header["kid"]}
    assert keys[old_kid]["alg"] == "ES256" and keys[new_header["kid"]]["alg"] == "RS256"
    for jwk in keys.values():
        assert not PRIVATE_MEMBERS & set(jwk)

    # A token signed by the retired key is still accepted by the new configuration.
    me = client.get("/me", headers=bearer(old_token))
    assert me.status_code == 200, me.get_json()
    assert me.get_json()["username"] == "alice"
    assert client.get("/me", headers=bearer(new_token)).get_json()["username"] == "bob"
    assert claims_of(old_token)["sub"] == me.get_json()["id"]


def test_a_token_cannot_switch_the_algorithm_of_its_key(make_app):
    """A token naming the retired ES256 key but signed otherwise is refused (algorithm pinned)."""
    old_app = make_app()
    old_token = signup(old_app.test_client())["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_app = make_app(AUTHSVC_SIGNING_ALG="RS256")
    client = new_app.test_client()
    signup(client, username="bob")
    with new_app.app_context():
        rsa_key = runtime().keyring.signing_key()
    forged = jwt.encode(
        claims_of(old_token),
        rsa_key.private_key,
        algorithm="RS256",
        headers={"kid": old_kid, "typ": "at+jwt"},
    )
    response = client.get("/me", headers=bearer(forged))
    assert response.status_code == 401


def test_the_cached_key_ring_reloads_after_its_cache_lifetime(make_app):
    """A key created by another replica becomes visible to this one without a restart."""
    # The cache lives a quarter of the publish delay, at least a second: 1 s here.
    one = make_app(AUTHSVC_JWKS_MAX_AGE="4")
    with one.app_context():
        es_kid = runtime().keyring.signing_key().kid
        assert [k["kid"] for k in runtime().keyring.jwks()["keys"]] == [es_kid]
    two = make_app(AUTHSVC_SIGNING_ALG="EdDSA")
    with two.app_context():
        ed_kid = runtime().keyring.signing_key().kid
    # Within the cache lifetime replica one may serve its cached view; after it, the new one.
    time.sleep(1.1)
    with one.app_context():
        published = {k["kid"] for k in runtime().keyring.jwks()["keys"]}
    assert published == {es_kid, ed_kid}
