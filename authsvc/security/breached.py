"""Optional breached-password check against an HIBP-compatible range API (k-anonymity).

Only the first 5 hex characters of the password's SHA-1 leave the service; the API answers with
every suffix it knows for that prefix and the match is made here. Fail policy: **open** — if the
API is slow (1 s timeout) or unreachable, the password is judged by the offline rules alone
(length, the shipped common-password list), and a warning is logged. Signups and password
changes keep working when a third-party service does not.
"""

from __future__ import annotations

import hashlib
import logging
import time
import urllib.error
import urllib.request

from prometheus_client import Counter

TIMEOUT_SECONDS = 1.0
_MAX_RESPONSE_BYTES = 2 * 1024 * 1024

log = logging.getLogger("authsvc.breached")
CHECKS = Counter(
    "authsvc_breached_password_checks_total",
    "Breached-password range lookups by outcome (breached, clean, unavailable).",
    ["outcome"],
)


class BreachedPasswordChecker:
    def __init__(self, api_url: str, timeout: float = TIMEOUT_SECONDS) -> None:
        self._api_url = api_url.rstrip("/")
        self._timeout = timeout

    def is_breached(self, password: str) -> bool:
        """True if the range API lists the password; False if not, or if it cannot be asked."""
        digest = hashlib.sha1(password.encode("utf-8"), usedforsecurity=False).hexdigest().upper()
        prefix, suffix = digest[:5], digest[5:]
        request = urllib.request.Request(  # noqa: S310 - the URL is validated as http(s) in config
            f"{self._api_url}/{prefix}",
            # Padding hides the real number of suffixes for the prefix from an observer.
            headers={"Add-Padding": "true", "User-Agent": "authsvc"},
        )
        deadline = time.monotonic() + self._timeout
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                body = response.read(_MAX_RESPONSE_BYTES)
            if time.monotonic() > deadline:
                raise TimeoutError("range API answered too slowly")
        except (OSError, ValueError) as error:  # URLError, timeouts, refused, bad status
            log.warning("breached-password API unavailable (%s); accepting", type(error).__name__)
            CHECKS.labels(outcome="unavailable").inc()
            return False
        for line in body.decode("utf-8", "replace").splitlines():
            candidate, _, count = line.strip().partition(":")
            if candidate.upper() == suffix and count.strip() not in {"", "0"}:
                CHECKS.labels(outcome="breached").inc()
                return True
        CHECKS.labels(outcome="clean").inc()
        return False
