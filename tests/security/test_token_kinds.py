"""Access and refresh tokens are signed by different kinds of key (DESIGN §3): access tokens
with the published asymmetric key, refresh tokens with an HMAC secret only authsvc holds. The
algorithm is pinned per kid, so neither kind of key ever verifies the other kind of token."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import jwt
import pytest
from sqlalchemy import update

from authsvc.extensions import db
from authsvc.models import SigningKey
from authsvc.runtime import runtime
from authsvc.security import keys
from tests.support.helpers import assert_invalid_token, bearer, claims_of, login, signup
from tests.support.settings import ISSUER


def _service_keys(app):
    with app.app_context():
        return runtime().keyring.signing_key()


def test_an_access_token_under_an_hmac_kid_is_refused(app, client):
    """Even validly signed with the HMAC secret itself: an HMAC kid never verifies access."""
    tokens = signup(client)
    key = _service_keys(app)
    claims = {**claims_of(tokens["access_token"]), "jti": str(uuid.uuid4())}
    forged = jwt.encode(
        claims, key.hmac_key, algorithm="HS256", headers={"kid": key.hmac_kid, "typ": "at+jwt"}
    )
    assert_invalid_token(client.get("/me", headers=bearer(forged)))
    # And HS256 under the asymmetric kid, whatever the secret (the public key as one is
    # tests/security/test_attacks.py's): that kid verifies its own algorithm only.
    assert client.get("/.well-known/jwks.json").get_json()["keys"][0]["kid"] == key.kid
    confused = jwt.encode(
        claims, key.hmac_key, algorithm="HS256", headers={"kid": key.kid, "typ": "at+jwt"}
    )
    assert_invalid_token(client.get("/me", headers=bearer(confused)))


def test_a_refresh_token_under_the_asymmetric_kid_is_refused(app, client):
    """Validly signed with the private key: an asymmetric kid never verifies a refresh token."""
    tokens = signup(client)
    key = _service_keys(app)
    forged = jwt.encode(
        claims_of(tokens["refresh_token"]),
        key.private_key,
        algorithm=key.alg,
        headers={"kid": key.kid, "typ": "JWT"},
    )
    assert_invalid_token(client.post("/refresh", headers=bearer(forged)))
    # The genuine one, for contrast, still refreshes.
    assert client.post("/refresh", headers=bearer(tokens["refresh_token"])).status_code == 200


# The forger's 32-byte key is short for HS384/HS512; PyJWT warns the forger, not us.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_a_refresh_token_with_another_algorithm_under_its_kid_is_refused(app, client):
    tokens = signup(client)
    key = _service_keys(app)
    for alg in ("HS384", "HS512"):
        forged = jwt.encode(
            claims_of(tokens["refresh_token"]),
            key.hmac_key,
            algorithm=alg,
            headers={"kid": key.hmac_kid, "typ": "JWT"},
        )
        assert_invalid_token(client.post("/refresh", headers=bearer(forged)))


def test_hmac_keys_rotate_and_retired_ones_verify_until_their_tokens_are_dead(make_app):
    app = make_app(AUTHSVC_JWKS_MAX_AGE="4")  # a next key signs after 4 s + the cache's 1 s
    client = app.test_client()
    old = signup(client)
    old_kid = jwt.get_unverified_header(old["refresh_token"])["kid"]
    with app.app_context():
        ring = runtime().keyring
        assert ring.publish_next_key(reason="test") is not None
    time.sleep(5.5)
    with app.app_context():
        runtime().keyring.refresh()
    new = login(client)
    new_kid = jwt.get_unverified_header(new["refresh_token"])["kid"]
    assert new_kid != old_kid and new_kid.startswith(keys.HMAC_KID_PREFIX)
    # The retired key's secret still verifies the refresh tokens it signed...
    rotated = client.post("/refresh", headers=bearer(old["refresh_token"]))
    assert rotated.status_code == 200, rotated.get_json()
    assert jwt.get_unverified_header(rotated.get_json()["refresh_token"])["kid"] == new_kid
    # ...until the key is gone, once nothing it signed can live.
    with app.app_context():
        keys.delete_dead_keys(retain_retired=timedelta(0))
        runtime().keyring.refresh()
    stale = login(client)  # a fresh session, then a token under the deleted kid
    forged_kid = {**jwt.get_unverified_header(stale["refresh_token"]), "kid": old_kid}
    assert forged_kid["kid"] != new_kid
    head = jwt.utils.base64url_encode(json.dumps(forged_kid, separators=(",", ":")).encode())
    head = head.decode()
    under_dead_kid = ".".join([head, *stale["refresh_token"].split(".")[1:]])
    assert_invalid_token(client.post("/refresh", headers=bearer(under_dead_kid)))


def test_keys_made_before_hmac_secrets_get_one_once(make_app):
    """A key row from before migration 0003 has no HMAC secret: the first process to load it
    adds one (conditionally), and every replica then signs and verifies with that one."""
    first = make_app()
    signup(first.test_client())
    with first.app_context():
        db.session.execute(update(SigningKey).values(hmac_key_encrypted=None))
        db.session.commit()
    replicas = [make_app(), make_app()]
    secrets = set()
    for replica in replicas:
        with replica.app_context():
            secrets.add(runtime().keyring.signing_key().hmac_key)
    assert len(secrets) == 1
    tokens = login(replicas[0].test_client())
    refreshed = replicas[1].test_client().post("/refresh", headers=bearer(tokens["refresh_token"]))
    assert refreshed.status_code == 200, refreshed.get_json()
    assert claims_of(tokens["refresh_token"])["aud"] == ISSUER
