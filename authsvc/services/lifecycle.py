"""What every path that demotes, disables or erases an account shares (DESIGN §11): the
last-admin rule, and the erasure of a user with everything that names them.

Both run inside the caller's write transaction.
"""

from __future__ import annotations

from ..errors import LastAdmin
from ..models import User
from ..runtime import runtime
from ..security import emails
from ..store import events as event_store
from ..store import one_time_tokens as token_store
from ..store import outbox as outbox_store
from ..store import sessions as session_store
from ..store import users as user_store


def keep_an_admin(user: User, *, stays_admin: bool) -> None:
    """Refuse (409 ``last_admin``) a change after which ``user``, an active admin now, would
    no longer be one (``stays_admin`` False) while no other active admin exists. Takes the
    role-change lock first, so parallel changes are decided one after another."""
    role = runtime().settings.admin.role
    user_store.lock_role_changes()
    current = user_store.get(user.id)
    if current is None or stays_admin:
        return
    if role not in (current.roles or []) or not current.is_active:
        return
    if user_store.count_active_holders(role, excluding=current.id) == 0:
        raise LastAdmin()


def erase(user: User) -> None:
    """Delete ``user`` and everything that names them: sessions (revoked first, so every
    process's cache lets go at once), factors, recovery codes, challenges and one-time tokens
    (by cascade), and the outbox's mail to their addresses. Their audit events keep the id
    only (no address)."""
    addresses = set(token_store.addresses_of(user.id))
    if user.email:
        addresses.add(user.email)
    # The outbox holds the form handed to the server (an IDN domain in punycode).
    addresses |= {emails.deliverable(address) for address in addresses}
    session_store.revoke(user_id=user.id, reason="user_deleted")
    outbox_store.delete_for_recipients(sorted(addresses))
    event_store.forget_user(user.id)
    user_store.delete(user.id)
