"""The downstream example (examples/downstream/app.py): verifies authsvc access tokens by itself,
configured by the issuer URL alone.

End to end: real authsvc under gunicorn (SQLite, and PostgreSQL + Redis), and the example under
gunicorn on another port with nothing in its environment but AUTHSVC_ISSUER.

In process: the example's app against a fake issuer this module serves and controls, for what a
real authsvc cannot easily be made to do on demand: publish a new key, drop an old one, go down,
serve a bad discovery document, and each claim and header rule one at a time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import jwt
import psycopg
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient

from authsvc import create_app
from authsvc.extensions import db
from tests.support.helpers import PASSWORD, claims_of, sign_with_service_key
from tests.support.servers import BIN, ROOT, authsvc_gunicorn, flask_command, free_port, running
from tests.support.settings import TABLES, TEST_SECRET

DOWNSTREAM = ROOT / "examples" / "downstream"
# A short publish delay, so the rotation test waits seconds, not minutes.
PUBLISH_DELAY = 3


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """alg "none": header and claims, empty signature."""
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()), ""])


def assert_unauthorized(response: Any, code: str = "invalid_token") -> None:
    """401 (never flask-jwt-extended's 422) as an RFC 9457 problem with RFC 6750's header."""
    assert response.status_code == 401, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json() if callable(response.json) else response.json
    assert body["status"] == 401 and body["code"] == code
    if code == "invalid_token":
        expected = 'Bearer realm="downstream", error="invalid_token"'
    else:
        expected = 'Bearer realm="downstream"'
    assert response.headers["WWW-Authenticate"] == expected


# --- end to end: authsvc and the example, both under gunicorn -------------------------------


@dataclass
class Authsvc:
    base_url: str
    config: dict[str, str]
    env: dict[str, str]

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)]
)
def authsvc(request, tmp_path_factory) -> Iterator[Authsvc]:
    """authsvc with the command lines the compose services run: migrate, then gunicorn (two
    workers on PostgreSQL + Redis, as in docker-compose.yml)."""
    tmp_path = tmp_path_factory.mktemp(f"authsvc-{request.param}")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    config = {
        "AUTHSVC_ISSUER": issuer,
        "AUTHSVC_ARGON2_MEMORY_KIB": "1024",
        "AUTHSVC_ARGON2_TIME_COST": "1",
        "AUTHSVC_JWKS_MAX_AGE": str(PUBLISH_DELAY),
        "AUTHSVC_RATELIMIT_ENABLED": "false",  # the rotation test signs up repeatedly
    }
    if request.param == "sqlite":
        config.update(AUTHSVC_ENV="development", DATABASE_URL=f"sqlite:///{tmp_path}/authsvc.db")
    else:
        database = request.getfixturevalue("postgres_url")
        config.update(
            AUTHSVC_ENV="production",
            AUTHSVC_SECRET_KEY=TEST_SECRET,
            DATABASE_URL=database,
            REDIS_URL=request.getfixturevalue("redis_url"),
        )
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
    env = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        **config,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "WEB_CONCURRENCY": "2",  # as docker-compose.yml runs it
    }
    (tmp_path / "metrics").mkdir()
    with authsvc_gunicorn(env, port, tmp_path / "authsvc.log") as base_url:
        yield Authsvc(base_url, config, env)


@pytest.fixture(scope="module")
def downstream(authsvc: Authsvc, tmp_path_factory) -> Iterator[str]:
    """The example under gunicorn; its environment holds the issuer URL and PATH, nothing else."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("downstream") / "downstream.log"
    command = [
        str(BIN / "gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--threads",
        "4",
        "app:create_app()",
    ]
    env = {"AUTHSVC_ISSUER": authsvc.base_url, "PATH": os.environ.get("PATH", "")}
    base_url = f"http://127.0.0.1:{port}"
    with running(command, env, f"{base_url}/healthz", log_path, cwd=DOWNSTREAM):
        yield base_url


def call(base_url: str, path: str, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(base_url + path, headers=headers, timeout=10)


def signup(authsvc: Authsvc, username: str) -> dict[str, Any]:
    response = requests.post(
        authsvc.url("/signup"), json={"username": username, "password": PASSWORD}, timeout=30
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.slow
def test_downstream_accepts_only_authsvc_access_tokens(authsvc: Authsvc, downstream: str):
    tokens = signup(authsvc, f"down-{uuid.uuid4().hex[:8]}@example.com")
    access = tokens["access_token"]

    # Several calls, so both workers fetch the discovery document and keys themselves.
    for _ in range(4):
        hello = call(downstream, "/hello", access)
        assert hello.status_code == 200, hello.text
        assert hello.json() == {"hello": tokens["user"]["id"]}

    # The refresh token is signed by the same key, but is no access token.
    assert_unauthorized(call(downstream, "/hello", tokens["refresh_token"]))

    # Same header (kid), same claims, signed by a key that is not authsvc's.
    header = jwt.get_unverified_header(access)
    forged = jwt.encode(
        claims_of(access),
        ec.generate_private_key(ec.SECP256R1()),
        algorithm=header["alg"],
        headers={"kid": header["kid"], "typ": "at+jwt"},
    )
    assert_unauthorized(call(downstream, "/hello", forged))

    none = unsigned_token({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}, claims_of(access))
    assert_unauthorized(call(downstream, "/hello", none))
    # A tampered payload under the genuine signature.
    head, _, rest = access.partition(".")
    _, _, signature = rest.partition(".")
    tampered_claims = {**claims_of(access), "roles": ["admin"]}
    tampered = f"{head}.{b64url(json.dumps(tampered_claims).encode())}.{signature}"
    assert_unauthorized(call(downstream, "/admin", tampered))

    assert_unauthorized(call(downstream, "/hello", "not-a-jwt"))
    assert_unauthorized(call(downstream, "/hello"), code="missing_token")

    admin = call(downstream, "/admin", access)
    assert admin.status_code == 403, admin.text
    assert admin.headers["Content-Type"] == "application/problem+json"
    assert admin.json()["code"] == "insufficient_role"

    # A password login is aal1: the aal2 route answers RFC 9470's step-up challenge.
    sensitive = call(downstream, "/sensitive", access)
    assert sensitive.status_code == 403, sensitive.text
    assert sensitive.json()["code"] == "insufficient_user_authentication"
    assert 'error="insufficient_user_authentication"' in sensitive.headers["WWW-Authenticate"]


@pytest.mark.slow
def test_key_rotation_reaches_the_running_downstream_without_a_restart(
    authsvc: Authsvc, downstream: str
):
    """`flask keys rotate`, then the publish delay: new tokens carry the new kid; the running
    downstream accepts them, and still accepts tokens the old (now retired) key signed."""
    old = signup(authsvc, f"rotate-old-{uuid.uuid4().hex[:8]}@example.com")
    old_kid = jwt.get_unverified_header(old["access_token"])["kid"]
    assert call(downstream, "/hello", old["access_token"]).status_code == 200

    output = flask_command(authsvc.env, "keys", "rotate")
    new_kid = next(line.split()[1] for line in output.splitlines() if line.startswith("published"))
    assert new_kid != old_kid
    # Published (within one key-cache lifetime) while the old key still signs.
    deadline = time.monotonic() + 5
    while True:
        jwks = requests.get(authsvc.url("/.well-known/jwks.json"), timeout=5).json()
        if new_kid in {key["kid"] for key in jwks["keys"]}:
            break
        assert time.monotonic() < deadline, "the new key was never published"
        time.sleep(0.2)
    probe = signup(authsvc, f"rotate-probe-{uuid.uuid4().hex[:8]}@example.com")
    assert jwt.get_unverified_header(probe["access_token"])["kid"] == old_kid

    # Until the publish delay is over the old key signs; after it (and the key cache), the new.
    deadline = time.monotonic() + PUBLISH_DELAY + 15
    while True:
        fresh = signup(authsvc, f"rotate-new-{uuid.uuid4().hex[:8]}@example.com")
        kid = jwt.get_unverified_header(fresh["access_token"])["kid"]
        if kid == new_kid:
            break
        assert kid == old_kid
        assert time.monotonic() < deadline, "the new key never started signing"
        time.sleep(0.5)

    for _ in range(4):  # both downstream workers
        assert call(downstream, "/hello", fresh["access_token"]).status_code == 200
        assert call(downstream, "/hello", old["access_token"]).status_code == 200
    me = requests.get(
        authsvc.url("/me"), headers={"Authorization": f"Bearer {old['access_token']}"}, timeout=5
    )
    assert me.status_code == 200
    keys = flask_command(authsvc.env, "keys", "list")
    states = {
        line.split()[0]: line.split()[2] for line in keys.splitlines() if line and line[0] != "{"
    }
    assert states[new_kid] == "active" and states[old_kid] == "retired"


def test_downstream_checks_claims_of_validly_signed_tokens(authsvc: Authsvc, downstream: str):
    """Tokens signed with authsvc's own key (an in-process app on the same database), each
    breaking one rule; and the admin role, which a signup never gets."""
    access = signup(authsvc, f"claims-{uuid.uuid4().hex[:8]}@example.com")["access_token"]
    claims = claims_of(access)
    app = create_app(authsvc.config)
    try:
        now = int(time.time())

        def token(headers: dict[str, Any] | None = None, **changes: Any) -> str:
            body = {**claims, "jti": str(uuid.uuid4()), **changes}
            body = {name: value for name, value in body.items() if value is not None}
            return sign_with_service_key(app, body, {"typ": "at+jwt", **(headers or {})})

        admin = call(downstream, "/admin", token(roles=["admin"]))
        assert admin.status_code == 200, admin.text
        assert admin.json() == {"admin": True, "sub": claims["sub"]}
        stepped_up = call(downstream, "/sensitive", token(aal="aal2", amr=["pwd", "otp"]))
        assert stepped_up.status_code == 200, stepped_up.text
        assert stepped_up.json() == {"sensitive": True, "sub": claims["sub"], "amr": ["pwd", "otp"]}
        within_leeway = call(downstream, "/hello", token(exp=now - 3, iat=now - 60, nbf=now - 60))
        assert within_leeway.status_code == 200, within_leeway.text

        for rejected in (
            token(exp=now - 60, iat=now - 120, nbf=now - 120),  # expired
            token(nbf=now + 120),  # not yet valid
            token(aud="someone-else"),
            token(aud=authsvc.base_url),  # the refresh tokens' audience
            token(iss="https://evil.example"),
            token(type="refresh"),
            token(type=None),
            token(jti=None),
            token(headers={"typ": "JWT"}),
        ):
            assert_unauthorized(call(downstream, "/hello", rejected))
    finally:
        with app.app_context():
            db.engine.dispose()


# --- in process, against a fake issuer ------------------------------------------------------

ALGORITHM = "ES256"
AUDIENCE = "api"


@dataclass
class Key:
    kid: str
    private: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def jwk(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}


class FakeIssuer:
    """Serves a discovery document and a JWK Set that the tests change at will."""

    def __init__(self) -> None:
        self.keys = [Key("key-a")]
        self.max_age = 300
        self.down = False
        self.algorithms = [ALGORITHM]
        self.issuer_override: str | None = None
        self.jwks_fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if issuer.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                if self.path == "/.well-known/openid-configuration":
                    body = {
                        "issuer": issuer.issuer_override or issuer.url,
                        "jwks_uri": f"{issuer.url}/.well-known/jwks.json",
                        "id_token_signing_alg_values_supported": issuer.algorithms,
                        "access_token_audience": [AUDIENCE],
                    }
                elif self.path == "/.well-known/jwks.json":
                    issuer.jwks_fetches += 1
                    body = {"keys": [key.jwk() for key in issuer.keys]}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", f"public, max-age={issuer.max_age}")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
            "type": "access",
            "fresh": False,
            "roles": [],
            **changes,
        }
        return {name: value for name, value in claims.items() if value is not None}

    def token(
        self, key: Key | None = None, headers: dict[str, Any] | None = None, **changes: Any
    ) -> str:
        key = key or self.keys[0]
        merged = {"kid": key.kid, "typ": "at+jwt", **(headers or {})}
        if merged["kid"] is None:
            del merged["kid"]  # (typ None is PyJWT's way to leave typ out)
        return jwt.encode(self.claims(**changes), key.private, algorithm=ALGORITHM, headers=merged)


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """examples/downstream/app.py, loaded fresh (tests may change its module constants)."""
    spec = importlib.util.spec_from_file_location("downstream_example", DOWNSTREAM / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module executes.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def issuer() -> Iterator[FakeIssuer]:
    fake = FakeIssuer()
    yield fake
    fake.close()


@pytest.fixture
def client(example: ModuleType, issuer: FakeIssuer) -> FlaskClient:
    return example.create_app(issuer.url).test_client()


def get(client: FlaskClient, path: str, token: str | None = None, **headers: str) -> Any:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.get(path, headers=headers)


def test_valid_token_and_roles(client: FlaskClient, issuer: FakeIssuer):
    hello = get(client, "/hello", issuer.token())
    assert hello.status_code == 200 and hello.json == {"hello": "user-1"}
    assert get(client, "/admin", issuer.token(roles=["admin"])).json == {
        "admin": True,
        "sub": "user-1",
    }
    for roles in ([], ["user"], "admin", None):
        forbidden = get(client, "/admin", issuer.token(roles=roles))
        assert forbidden.status_code == 403
        assert forbidden.json["code"] == "insufficient_role"
    assert get(client, "/healthz").json == {"status": "ok"}
    assert get(client, "/nowhere").status_code == 404
    assert get(client, "/nowhere").mimetype == "application/problem+json"


def _rejected_tokens(issuer: FakeIssuer) -> dict[str, str]:
    now = int(time.time())
    attacker = Key(issuer.keys[0].kid)  # the real kid, someone else's key
    public_pem = (
        issuer.keys[0]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    tokens = {f"missing {claim}": issuer.token(**{claim: None}) for claim in jwt_required_claims()}
    tokens.update(
        {
            "refresh type": issuer.token(type="refresh"),
            "no type": issuer.token(type=None),
            "typ JWT": issuer.token(headers={"typ": "JWT"}),
            "no typ": issuer.token(headers={"typ": None}),
            "wrong issuer": issuer.token(iss="https://evil.example"),
            "wrong audience": issuer.token(aud="other"),
            "expired beyond leeway": issuer.token(exp=now - 15, iat=now - 60, nbf=now - 60),
            "not yet valid": issuer.token(nbf=now + 60),
            "issued in the future": issuer.token(iat=now + 60),
            "numeric sub": issuer.token(sub=42),
            "unknown kid": issuer.token(Key("key-unknown")),
            "no kid": issuer.token(headers={"kid": None}),
            "forged with the real kid": issuer.token(attacker),
            "embedded jwk": issuer.token(
                attacker,
                headers={"jwk": attacker.jwk(), "jku": f"{issuer.url}/attacker.json"},
            ),
            "crit": issuer.token(headers={"crit": ["exp"]}),
            "alg none": unsigned_token(
                {"alg": "none", "typ": "at+jwt", "kid": issuer.keys[0].kid}, issuer.claims()
            ),
            # Algorithm confusion: HMAC keyed with the (public) verification key.
            "HS256 with the public key": hs256_token(public_pem, issuer),
            "garbage": "a.b.c",
        }
    )
    return tokens


def jwt_required_claims() -> tuple[str, ...]:
    return ("exp", "iat", "nbf", "iss", "aud", "sub", "jti")


def hs256_token(secret: bytes, issuer: FakeIssuer) -> str:
    """Signed by hand: PyJWT itself refuses a PEM public key as an HMAC secret."""
    header = b64url(
        json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": issuer.keys[0].kid}).encode()
    )
    payload = b64url(json.dumps(issuer.claims()).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def test_every_rule_rejects_with_401(client: FlaskClient, issuer: FakeIssuer):
    assert get(client, "/hello", issuer.token()).status_code == 200
    for name, token in _rejected_tokens(issuer).items():
        response = get(client, "/hello", token)
        assert response.status_code == 401, f"{name}: {response.status_code} {response.json}"
        assert_unauthorized(response)
    within_leeway = issuer.token(exp=int(time.time()) - 5)
    assert get(client, "/hello", within_leeway).status_code == 200


def test_missing_or_malformed_authorization_is_401(client: FlaskClient, issuer: FakeIssuer):
    assert_unauthorized(get(client, "/hello"), code="missing_token")
    assert_unauthorized(
        get(client, "/hello", Authorization=f"Basic {issuer.token()}"), code="missing_token"
    )
    assert get(client, "/hello", Authorization="Bearer").status_code == 401
    # Only the header: a token in the query string or body is not looked at.
    assert_unauthorized(client.get(f"/hello?jwt={issuer.token()}"), code="missing_token")


def test_rotated_key_is_picked_up_and_removed_key_dropped(example: ModuleType, issuer: FakeIssuer):
    """authsvc publishes a new key a cache lifetime before it signs with it; the key set is
    cached for the issuer's max-age, so the new key is there by then, without a restart."""
    issuer.max_age = 1
    client = example.create_app(issuer.url).test_client()
    old = issuer.keys[0]
    assert get(client, "/hello", issuer.token(old)).status_code == 200
    new = Key("key-b")
    issuer.keys.append(new)  # published, not yet signing
    time.sleep(1.2)
    assert get(client, "/hello", issuer.token(new)).status_code == 200
    assert get(client, "/hello", issuer.token(old)).status_code == 200  # retired: still verifies
    issuer.keys.remove(old)  # deleted
    time.sleep(1.2)
    assert_unauthorized(get(client, "/hello", issuer.token(old)))
    assert get(client, "/hello", issuer.token(new)).status_code == 200


def test_unknown_kid_refetches_the_key_set_with_a_cooldown(
    example: ModuleType, issuer: FakeIssuer, monkeypatch: pytest.MonkeyPatch
):
    """A key that signs before its publication reached our cache: the unknown kid forces one
    refetch (so no restart is needed), but forged kids cannot force a fetch per request."""
    monkeypatch.setattr(example, "JWKS_REFETCH_COOLDOWN", 0.5)
    client = example.create_app(issuer.url).test_client()
    assert get(client, "/hello", issuer.token()).status_code == 200
    assert issuer.jwks_fetches == 1
    time.sleep(0.6)
    new = Key("key-b")
    issuer.keys.append(new)
    assert get(client, "/hello", issuer.token(new)).status_code == 200
    assert issuer.jwks_fetches == 2
    for _ in range(5):
        assert_unauthorized(get(client, "/hello", issuer.token(Key(str(uuid.uuid4())))))
    assert issuer.jwks_fetches <= 3


def test_issuer_down_is_503_then_recovers(
    example: ModuleType, issuer: FakeIssuer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(example, "DISCOVERY_RETRY_SECONDS", 0.3)
    issuer.down = True
    client = example.create_app(issuer.url).test_client()  # starts without the issuer
    token = issuer.token()
    unavailable = get(client, "/hello", token)
    assert unavailable.status_code == 503
    assert unavailable.mimetype == "application/problem+json"
    assert unavailable.headers["Retry-After"]
    assert get(client, "/healthz").status_code == 200
    issuer.down = False
    time.sleep(0.4)
    assert get(client, "/hello", token).status_code == 200
    # Down again after a successful fetch: the cached document and keys still verify.
    issuer.down = True
    assert get(client, "/hello", issuer.token()).status_code == 200


@pytest.mark.parametrize("problem", ["issuer mismatch", "only HMAC", "no algorithms"])
def test_unusable_discovery_document_is_503(client: FlaskClient, issuer: FakeIssuer, problem: str):
    if problem == "issuer mismatch":
        issuer.issuer_override = "https://someone-else.example"
    elif problem == "only HMAC":
        issuer.algorithms = ["HS256", "none"]
    else:
        issuer.algorithms = []
    assert get(client, "/hello", issuer.token()).status_code == 503


def test_needs_an_http_issuer(example: ModuleType, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AUTHSVC_ISSUER", raising=False)
    with pytest.raises(RuntimeError, match="AUTHSVC_ISSUER"):
        example.create_app()
    with pytest.raises(ValueError, match="AUTHSVC_ISSUER"):
        example.create_app("file:///etc/passwd")
    monkeypatch.setenv("AUTHSVC_ISSUER", "https://auth.example.com/")
    app = example.create_app()
    assert app.config["JWT_DECODE_ISSUER"] == "https://auth.example.com"
