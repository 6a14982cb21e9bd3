"""Service clients: introspection (RFC 7662) for those that must not accept a logged-out token."""

from __future__ import annotations

import hmac
from typing import Any

from ..errors import InvalidClient
from ..models import Caller
from ..runtime import runtime
from ..tokens import verify

# Failed client authentications are counted per client id and per address (DESIGN §5).
CLIENT_GUESSES = "client"
ADDRESS_GUESSES = "client-address"


def authenticate(client_id: str, secret: str) -> bool:
    """An introspection client from AUTHSVC_INTROSPECTION_CLIENTS, compared in constant time."""
    expected = runtime().settings.introspection_clients.get(client_id)
    # Compare even for an unknown id, so timing does not reveal which ids exist.
    matches = hmac.compare_digest((expected or secret + "\x00").encode(), secret.encode())
    return expected is not None and matches


def require_client(client_id: str | None, secret: str | None, address: str) -> None:
    """InvalidClient (401) unless these are a registered client's credentials.

    A failure is reserved against the client id and the caller's address before the secret is
    compared, and given back when it matches: guesses are bounded, clients that authenticate are
    never slowed.
    """
    rt = runtime()
    limits = rt.settings.ratelimit_client_failures
    by_address = rt.failures.reserve(ADDRESS_GUESSES, address, limits)
    if client_id is None or secret is None:
        raise InvalidClient()
    by_client = rt.failures.reserve(CLIENT_GUESSES, client_id, limits)
    if not authenticate(client_id, secret):
        raise InvalidClient()
    by_client.succeeded()
    by_address.succeeded()


def introspect(token: str) -> tuple[dict[str, Any], Caller] | None:
    """The claims and user of a live access token, or None (``active: false``)."""
    return verify.introspect(token)
