"""The administration settings (DESIGN §11): which role may use the admin API, and how long
audit events are kept. Read by ``authsvc.config.load_settings`` with the rest."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config_reader import ConfigError, Reader

ADMIN_VARIABLES = frozenset({"AUTHSVC_ADMIN_ROLE", "AUTHSVC_AUDIT_RETENTION_DAYS"})

# Role names: what a `roles` claim can carry without quoting surprises downstream.
ROLE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")  # \Z: no trailing newline


@dataclass(frozen=True)
class AdminSettings:
    role: str  # holders of this role, at aal2, may call /admin/...
    audit_retention_days: int  # `flask prune` deletes audit events older than this


def admin_settings(read: Reader) -> AdminSettings:
    role = read.string("AUTHSVC_ADMIN_ROLE", "admin")
    if not ROLE_NAME.match(role):
        raise ConfigError(
            f"AUTHSVC_ADMIN_ROLE must be a role name (letters, digits, _ . : -), got {role!r}"
        )
    return AdminSettings(
        role=role,
        audit_retention_days=read.integer(
            "AUTHSVC_AUDIT_RETENTION_DAYS", 90, minimum=1, maximum=3650
        ),
    )
