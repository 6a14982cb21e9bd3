"""flask commands (``flask --app wsgi ...``). ``db upgrade`` comes from Flask-Migrate."""

from __future__ import annotations

from datetime import timedelta

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import delete, or_

from .database import write_transaction
from .extensions import db
from .models import RevokedToken, Session, utcnow

# Revoked sessions stay listed for audit this long before `prune` deletes them.
REVOKED_SESSION_KEEP = timedelta(days=1)


@click.command("prune")
@with_appcontext
def prune_command() -> None:
    """Delete expired sessions, long-revoked sessions and expired denylist rows.

    A token naming a deleted session is rejected like a revoked one, so deleting is always safe.
    """
    now = utcnow()
    with write_transaction():
        sessions = db.session.execute(
            delete(Session).where(
                or_(Session.expires_at <= now, Session.revoked_at <= now - REVOKED_SESSION_KEEP)
            )
        ).rowcount
        denied = db.session.execute(
            delete(RevokedToken).where(RevokedToken.expires_at <= now)
        ).rowcount
    click.echo(f"pruned {sessions} expired sessions, {denied} expired denylist entries")


def register_cli(app: Flask) -> None:
    app.cli.add_command(prune_command)
