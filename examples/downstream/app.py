"""A downstream API that accepts authsvc access tokens, verified locally (no call to authsvc).

Its only setting is the issuer URL, ``AUTHSVC_ISSUER``. From
``<issuer>/.well-known/openid-configuration`` it takes ``issuer``, ``jwks_uri``, the signing
algorithms (``id_token_signing_alg_values_supported``) and ``access_token_audience``; PyJWT's
PyJWKClient fetches the public keys from ``jwks_uri``, and flask-jwt-extended verifies each token
with the key its ``kid`` names.

The discovery document is fetched on the first request that needs it (so this service starts,
and answers /healthz, while authsvc is still down; until then protected routes answer 503) and
again once it is older than the issuer's ``Cache-Control: max-age``. The key set is cached for
as long; a kid that is not in the cached set forces a refetch (at most every
``JWKS_REFETCH_COOLDOWN`` seconds), so a rotated key is picked up without a restart.

Run it: ``AUTHSVC_ISSUER=http://localhost:8000 gunicorn --bind 127.0.0.1:8001 'app:create_app()'``
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify
from flask_jwt_extended import JWTManager, get_jwt, get_jwt_identity, jwt_required
from jwt import PyJWK, PyJWKClient
from jwt.exceptions import (
    InvalidAlgorithmError,
    InvalidTokenError,
    PyJWKClientConnectionError,
    PyJWKClientError,
)
from werkzeug.exceptions import HTTPException

# Asymmetric algorithms only: "none" and the HMAC family never verify a token here, whatever a
# discovery document says (an HMAC "key" would be the public key, known to everybody).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}
)
# RFC 9068 §4: an access token's header says typ "at+jwt" (or the full media type).
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "iss", "aud", "sub", "jti")
LEEWAY_SECONDS = 10
HTTP_TIMEOUT_SECONDS = 5
# Discovery and key-set cache lifetime when the issuer sends no max-age; bounds on what it sends.
DEFAULT_MAX_AGE_SECONDS = 300
MAX_AGE_BOUNDS = (1, 3600)
# After a failed discovery fetch, answer 503 at once for this long instead of retrying per request.
DISCOVERY_RETRY_SECONDS = 5
# An unknown kid forces a key-set refetch at most this often (per process), so forged kids
# cannot hammer the issuer. authsvc publishes a new key one cache lifetime before it signs with
# it, so a rotated key is normally in the set long before a token names it.
JWKS_REFETCH_COOLDOWN = 10
REALM = "downstream"

log = logging.getLogger("downstream")


class Unavailable(Exception):
    """The issuer's discovery document or keys cannot be had right now: answer 503."""


class DiscoveryError(ValueError):
    """The discovery document is unusable (wrong issuer, no usable algorithm, ...)."""


@dataclass(frozen=True)
class Discovery:
    issuer: str
    algorithms: tuple[str, ...]
    audience: tuple[str, ...]
    jwks_uri: str
    jwks: PyJWKClient
    max_age: float
    fetched_at: float

    def fresh(self, now: float) -> bool:
        return now - self.fetched_at < self.max_age


def _http_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise DiscoveryError(f"{name} must be an http(s) URL, got {value!r}")
    return value


def _max_age(cache_control: str | None) -> float:
    match = re.search(r"max-age=(\d+)", cache_control or "")
    seconds = int(match.group(1)) if match else DEFAULT_MAX_AGE_SECONDS
    low, high = MAX_AGE_BOUNDS
    return float(min(max(seconds, low), high))


class IssuerConfig:
    """What the issuer URL leads to: the discovery document and a PyJWKClient, kept fresh."""

    def __init__(self, issuer: str) -> None:
        self.issuer = _http_url("AUTHSVC_ISSUER", issuer.strip().rstrip("/"))
        self._lock = threading.Lock()
        self._current: Discovery | None = None
        self._failed_at: float | None = None

    def current(self) -> Discovery:
        """The discovery data; fetched on first use and once stale. Raises :class:`Unavailable`.

        One thread refreshes stale data while the others go on with it; a failed refresh keeps
        it (the keys it names still verify) and is retried after DISCOVERY_RETRY_SECONDS.
        """
        current = self._current
        if current is not None and current.fresh(time.monotonic()):
            return current
        if not self._lock.acquire(blocking=current is None):
            return current  # another thread is refreshing
        try:
            now = time.monotonic()
            current = self._current
            if current is not None and current.fresh(now):
                return current  # another thread fetched it while this one waited
            if self._failed_at is not None and now - self._failed_at < DISCOVERY_RETRY_SECONDS:
                if current is None:
                    raise Unavailable("the issuer's discovery document is unavailable")
                return current
            try:
                self._current = self._fetch(current, now)
            except (OSError, http.client.HTTPException, ValueError) as error:
                self._failed_at = now
                log.warning("discovery from %s failed: %s", self.issuer, error)
                if current is None:
                    raise Unavailable("the issuer's discovery document is unavailable") from error
                return current
            self._failed_at = None
            return self._current
        finally:
            self._lock.release()

    def _fetch(self, previous: Discovery | None, now: float) -> Discovery:
        # S310: the URL is built from the issuer, validated as http(s) in __init__.
        request = urllib.request.Request(  # noqa: S310
            f"{self.issuer}/.well-known/openid-configuration",
            headers={"Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310
            document = json.load(response)
            max_age = _max_age(response.headers.get("Cache-Control"))
        if not isinstance(document, dict):
            raise DiscoveryError("the discovery document is not a JSON object")
        # OpenID Connect Discovery §4.3: the document must name exactly the issuer we asked.
        if document.get("issuer") != self.issuer:
            raise DiscoveryError(
                f"the discovery document names issuer {document.get('issuer')!r}, "
                f"not {self.issuer!r}"
            )
        jwks_uri = _http_url("jwks_uri", str(document.get("jwks_uri", "")))
        offered = document.get("id_token_signing_alg_values_supported")
        algorithms = tuple(
            alg
            for alg in (offered if isinstance(offered, list) else [])
            if alg in ASYMMETRIC_ALGORITHMS
        )
        if not algorithms:
            raise DiscoveryError("the discovery document offers no asymmetric signing algorithm")
        audience = document.get("access_token_audience")
        if isinstance(audience, str):
            audience = [audience]
        if (
            not isinstance(audience, list)
            or not audience
            or not all(isinstance(item, str) and item for item in audience)
        ):
            raise DiscoveryError("the discovery document has no access_token_audience")
        if previous is not None and previous.jwks_uri == jwks_uri:
            jwks = previous.jwks  # keep its cached key set
        else:
            jwks = PyJWKClient(
                jwks_uri,
                cache_keys=False,  # no per-kid cache without expiry: a removed key goes away
                cache_jwk_set=True,
                lifespan=max_age,
                timeout=HTTP_TIMEOUT_SECONDS,
                cooldown_duration=min(JWKS_REFETCH_COOLDOWN, max_age),
            )
        return Discovery(
            issuer=self.issuer,
            algorithms=algorithms,
            audience=tuple(audience),
            jwks_uri=jwks_uri,
            jwks=jwks,
            max_age=max_age,
            fetched_at=now,
        )


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    """An RFC 9457 problem, the same shape authsvc answers with."""
    titles = {401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable"}
    response = jsonify(
        type="about:blank",
        title=titles.get(status, "Error"),
        status=status,
        detail=detail,
        code=code,
    )
    response.status_code = status
    response.mimetype = "application/problem+json"
    response.headers.update(headers or {})
    return response


def invalid_token(detail: str = "The access token is invalid.") -> Response:
    return problem(
        401,
        "invalid_token",
        detail,
        {"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'},
    )


def _issuer_config() -> IssuerConfig:
    return current_app.extensions["downstream.issuer"]


def verification_key(header: dict[str, Any], claims: dict[str, Any]) -> PyJWK:
    """flask-jwt-extended's decode_key_loader: the issuer's key named by ``kid``.

    Runs before the signature is checked, on the unverified header and claims, so it can only
    refuse more: it refuses anything that is not an access token of this issuer (a refresh token
    has typ "JWT", type "refresh" and the issuer as its audience), then lets PyJWKClient find the
    key. PyJWT then checks the signature with exactly that key's algorithm, and exp, nbf, iat,
    iss and aud.
    """
    discovery = _issuer_config().current()
    if header.get("typ") not in ACCESS_TOKEN_TYPES or claims.get("type") != "access":
        raise InvalidTokenError("not an access token")
    if header.get("alg") not in discovery.algorithms:
        raise InvalidAlgorithmError("algorithm not offered by the issuer")
    if "crit" in header or "b64" in header:
        raise InvalidTokenError("unsupported critical header")
    missing = [claim for claim in REQUIRED_CLAIMS if claim not in claims]
    if missing:
        raise InvalidTokenError(f"missing claims: {', '.join(missing)}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidTokenError("no kid")
    # jku, x5u, jwk and x5c headers are never read: keys come from the issuer's jwks_uri only.
    try:
        key = discovery.jwks.get_signing_key(kid)
    except PyJWKClientConnectionError as error:
        raise Unavailable("the issuer's key set is unavailable") from error
    except PyJWKClientError as error:
        raise InvalidTokenError("unknown kid") from error
    if key.algorithm_name != header["alg"]:
        raise InvalidAlgorithmError("algorithm does not match the key")
    return key


def access_token_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """``jwt_required()`` once the issuer's discovery data is known (else 503)."""
    protected = jwt_required()(view)

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        discovery = _issuer_config().current()
        # flask-jwt-extended reads these per request; they change only when the issuer's
        # discovery document does.
        current_app.config["JWT_DECODE_ALGORITHMS"] = list(discovery.algorithms)
        current_app.config["JWT_DECODE_AUDIENCE"] = list(discovery.audience)
        return protected(*args, **kwargs)

    return wrapper


def register_jwt(app: Flask) -> None:
    jwt = JWTManager(app)
    jwt.decode_key_loader(verification_key)

    @jwt.unauthorized_loader
    def missing_token(reason: str) -> Response:
        log.info("no usable token: %s", reason)
        return problem(
            401,
            "missing_token",
            "A bearer access token is required.",
            {"WWW-Authenticate": f'Bearer realm="{REALM}"'},
        )

    @jwt.invalid_token_loader
    def rejected_token(reason: str) -> Response:
        log.info("token rejected: %s", reason)
        return invalid_token()

    @jwt.expired_token_loader
    def expired_token(_header: dict[str, Any], _claims: dict[str, Any]) -> Response:
        return invalid_token("The access token has expired.")


def register_errors(app: Flask) -> None:
    @app.errorhandler(Unavailable)
    def unavailable(error: Unavailable) -> Response:
        return problem(
            503,
            "unavailable",
            "The token issuer cannot be reached; try again shortly.",
            {"Retry-After": str(DISCOVERY_RETRY_SECONDS)},
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return problem(error.code or 500, error.name.lower().replace(" ", "_"), error.name)


def create_app(issuer: str | None = None) -> Flask:
    """The app; ``issuer`` defaults to the AUTHSVC_ISSUER environment variable."""
    issuer = issuer if issuer is not None else os.environ.get("AUTHSVC_ISSUER", "")
    if not issuer.strip():
        raise RuntimeError("AUTHSVC_ISSUER must be set to the issuer URL of authsvc")
    app = Flask(__name__)
    app.extensions["downstream.issuer"] = IssuerConfig(issuer)
    app.config.update(
        JWT_TOKEN_LOCATION=["headers"],
        JWT_DECODE_ISSUER=app.extensions["downstream.issuer"].issuer,
        JWT_DECODE_LEEWAY=LEEWAY_SECONDS,
        # JWT_DECODE_ALGORITHMS and JWT_DECODE_AUDIENCE come from the discovery document: see
        # access_token_required.
    )
    register_jwt(app)
    register_errors(app)

    @app.get("/hello")
    @access_token_required
    def hello() -> Response:
        return jsonify(hello=get_jwt_identity())

    @app.get("/admin")
    @access_token_required
    def admin() -> Response:
        roles = get_jwt().get("roles")
        if not isinstance(roles, list) or "admin" not in roles:
            return problem(
                403,
                "insufficient_role",
                "This endpoint needs the admin role.",
                {"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope"'},
            )
        return jsonify(admin=True, sub=get_jwt_identity())

    @app.get("/sensitive")
    @access_token_required
    def sensitive() -> Response:
        """Needs a second factor at login (authsvc's `aal` claim, DESIGN §10). The refusal is
        RFC 9470's step-up challenge: the client logs the user in again with MFA."""
        if get_jwt().get("aal") != "aal2":
            return problem(
                403,
                "insufficient_user_authentication",
                "This endpoint needs a login with a second factor (aal2).",
                {
                    "WWW-Authenticate": (
                        f'Bearer realm="{REALM}", error="insufficient_user_authentication", '
                        'error_description="a login with a second factor is required"'
                    )
                },
            )
        return jsonify(sensitive=True, sub=get_jwt_identity(), amr=get_jwt().get("amr"))

    @app.get("/healthz")
    def healthz() -> Response:
        """The process is up; authsvc being down does not make a restart useful."""
        return jsonify(status="ok")

    return app
