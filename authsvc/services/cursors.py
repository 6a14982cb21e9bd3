"""Opaque list cursors (DESIGN §11): the keyset position of a page's last row, (time, id),
as base64url JSON. Not a secret and not signed: it only says where to go on; anything that
does not decode to a position is 400 ``invalid_cursor``."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime

from ..errors import InvalidCursor

MAX_CURSOR_LENGTH = 200


def encode(at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([at.astimezone(UTC).isoformat(), str(row_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, row_id = json.loads(raw)
        if not (isinstance(at, str) and isinstance(row_id, str)):
            raise ValueError("not a position")
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return moment.astimezone(UTC), uuid.UUID(row_id)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor() from None
