"""Service clients: introspection (RFC 7662) for those that must not accept a logged-out token."""

from __future__ import annotations

import hmac
from typing import Any

from ..errors import InvalidClient
from ..models import Caller
from ..runtime import runtime
from ..tokens import verify


def authenticate(client_id: str, secret: str) -> bool:
    """An introspection client from AUTHSVC_INTROSPECTION_CLIENTS, compared in constant time."""
    expected = runtime().settings.introspection_clients.get(client_id)
    # Compare even for an unknown id, so timing does not reveal which ids exist.
    matches = hmac.compare_digest((expected or secret + "\x00").encode(), secret.encode())
    return expected is not None and matches


def require_client(client_id: str | None, secret: str | None) -> None:
    """InvalidClient (401) unless these are a registered client's credentials."""
    if client_id is None or secret is None or not authenticate(client_id, secret):
        raise InvalidClient()


def introspect(token: str) -> tuple[dict[str, Any], Caller] | None:
    """The claims and user of a live access token, or None (``active: false``)."""
    return verify.introspect(token)
