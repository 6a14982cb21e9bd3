"""Readiness: can this process serve traffic right now?"""

from __future__ import annotations

from ..runtime import runtime
from ..store.database import ping, rollback_quietly


def readiness() -> dict[str, str]:
    """``{"database", "redis" (when configured), "keys"}``, each "ok" or "unavailable": the
    database answers, Redis answers, a key can sign. The reasons are not a client's business."""
    rt = runtime()
    checks: dict[str, str] = {}
    try:
        ping()
        checks["database"] = "ok"
    except Exception:
        rollback_quietly()
        checks["database"] = "unavailable"
    if rt.redis is not None:
        try:
            rt.redis.ping()
            checks["redis"] = "ok"
        except Exception:
            checks["redis"] = "unavailable"
    checks["keys"] = "unavailable"
    if checks["database"] == "ok":
        try:
            rt.keyring.signing_key()
            checks["keys"] = "ok"
        except Exception:
            rollback_quietly()
    return checks
