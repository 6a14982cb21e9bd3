"""Service clients: introspection (RFC 7662) for those that must not accept a logged-out token."""

from __future__ import annotations

import hmac
from typing import Any

from ..errors import InvalidClient
from ..models import Caller
from ..runtime import runtime
from ..tokens import verify

# Failed client authentications are counted per client id *at an address* and per address
# (DESIGN §5 asks per client id): client ids are not secret, so a budget per id alone would let
# anyone lock a resource server out of introspection from a few addresses.
CLIENT_GUESSES = "client-at-address"
ADDRESS_GUESSES = "client-address"


def authenticate(client_id: str, secret: str) -> bool:
    """An introspection client from AUTHSVC_INTROSPECTION_CLIENTS, compared in constant time."""
    expected = runtime().settings.introspection_clients.get(client_id)
    # Compare even for an unknown id, so timing does not reveal which ids exist.
    matches = hmac.compare_digest((expected or secret + "\x00").encode(), secret.encode())
    return expected is not None and matches


def require_client(client_id: str | None, secret: str | None, address: str) -> None:
    """InvalidClient (401) unless these are a registered client's credentials; RateLimited (429)
    while the address, or this client id at this address, has no failures left (tested before
    the comparison, counted after it: see authsvc.security.attempts)."""
    rt = runtime()
    limits = rt.settings.ratelimit_client_failures
    budgets = [(ADDRESS_GUESSES, address)]
    if client_id is not None:
        budgets.append((CLIENT_GUESSES, f"{client_id}\n{address}"))
    for scope, target in budgets:
        rt.failures.refuse_if_exhausted(scope, target, limits)
    if client_id is None or secret is None or not authenticate(client_id, secret):
        for scope, target in budgets:
            rt.failures.count_failure(scope, target, limits)
        raise InvalidClient()


def introspect(token: str) -> tuple[dict[str, Any], Caller] | None:
    """The claims and user of a live access token, or None (``active: false``)."""
    return verify.introspect(token)
