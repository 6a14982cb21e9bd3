"""flask commands."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from authsvc.extensions import db
from authsvc.models import RevokedToken, Session, utcnow
from tests.helpers import bearer, claims_of, login, signup


def count(app, model):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_prune_deletes_expired_and_long_revoked_sessions_and_denylist_rows(app, client, runner):
    keep = signup(client)
    expired = login(client)
    revoked = login(client)
    client.post("/logout", headers=bearer(revoked["access_token"]))
    with app.app_context():
        now = utcnow()
        db.session.execute(
            update(Session)
            .where(Session.revoked_at.is_not(None))
            .values(revoked_at=now - timedelta(days=2))
        )
        db.session.add(RevokedToken(jti="old", expires_at=now - timedelta(seconds=1)))
        db.session.add(RevokedToken(jti="live", expires_at=now + timedelta(hours=1)))
        db.session.commit()
        db.session.execute(
            update(Session)
            .where(Session.id == uuid.UUID(claims_of(expired["access_token"])["sid"]))
            .values(expires_at=now - timedelta(seconds=1))
        )
        db.session.commit()
    assert count(app, Session) == 3
    result = runner.invoke(args=["prune"])
    assert result.exit_code == 0, result.output
    assert "pruned 2 expired sessions" in result.output
    assert count(app, Session) == 1
    with app.app_context():
        remaining = set(db.session.scalars(select(RevokedToken.jti)))
    assert "old" not in remaining
    assert "live" in remaining
    assert client.get("/me", headers=bearer(keep["access_token"])).status_code == 200
