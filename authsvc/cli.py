"""flask commands (``flask --app wsgi ...``). ``db upgrade`` comes from Flask-Migrate.

Flask-Migrate is imported only when a ``flask db`` command runs: with Alembic, Mako and Pygments
it is memory a web worker never uses (see ``MigrationsGroup``; bench/README.md has the size).

Passwords are never command-line arguments (they would show in ``ps`` and shell history): they
are prompted for, or read from standard input with ``--password-stdin``.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup, ScriptInfo, with_appcontext

from .errors import AuthsvcError
from .extensions import db
from .runtime import runtime
from .security import keys
from .services import admin

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

users_cli = AppGroup("users", help="Create, disable and list accounts.")
sessions_cli = AppGroup("sessions", help="Revoke sessions.")
keys_cli = AppGroup("keys", help="Signing keys: rotate and list.")


def _fail(error: AuthsvcError) -> None:
    raise click.ClickException(error.detail)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


# -- users ---------------------------------------------------------------------------------------


@users_cli.command("create")
@click.argument("username")
@click.option("--role", "roles", multiple=True, help="A role for the `roles` claim (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_create(username: str, roles: tuple[str, ...], password_stdin: bool) -> None:
    """Create an account."""
    try:
        user = admin.create_user(username, _read_password(password_stdin), sorted(set(roles)))
    except AuthsvcError as error:
        _fail(error)
    click.echo(f"created {user.username} ({user.id})")


@users_cli.command("disable")
@click.argument("username")
def users_disable(username: str) -> None:
    """Disable an account: logins fail and every session is revoked at once."""
    try:
        count = admin.disable_user(username)
    except AuthsvcError as error:
        _fail(error)
    click.echo(f"disabled {username}; revoked {count} sessions")


@users_cli.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_set_password(username: str, password_stdin: bool) -> None:
    """Set a new password; every session of the account is revoked."""
    try:
        count = admin.set_password(username, _read_password(password_stdin))
    except AuthsvcError as error:
        _fail(error)
    click.echo(f"password set for {username}; revoked {count} sessions")


@users_cli.command("list")
def users_list() -> None:
    """List accounts."""
    for user in admin.list_users():
        state = "disabled" if user.disabled_at else "active"
        roles = ",".join(user.roles or []) or "-"
        click.echo(
            f"{user.id}  {user.username}  {state}  roles={roles}  {user.created_at:%Y-%m-%d}"
        )


# -- sessions ------------------------------------------------------------------------------------


@sessions_cli.command("revoke")
@click.option("--user", "username", help="Revoke every session of this account.")
@click.option("--session", "session_id", type=click.UUID, help="Revoke this one session.")
def sessions_revoke(username: str | None, session_id: uuid.UUID | None) -> None:
    """Revoke sessions: their refresh and access tokens stop working here at once."""
    if (username is None) == (session_id is None):
        raise click.UsageError("give exactly one of --user or --session")
    try:
        if username is not None:
            count = admin.revoke_user_sessions(username)
        else:
            count = admin.revoke_session_by_id(session_id)  # type: ignore[arg-type]
    except AuthsvcError as error:
        _fail(error)
    click.echo(f"revoked {count} sessions")


# -- keys ----------------------------------------------------------------------------------------


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Publish a new key; it starts signing after AUTHSVC_JWKS_MAX_AGE seconds (plus the key
    cache lifetime, so every replica has published it for that long).

    Safe to run on several replicas at once: one key is created.
    """
    keyring = runtime().keyring
    keyring.signing_key()  # there must be an active key to rotate from
    row = keyring.publish_next_key(reason="manual")
    if row is None:
        pending = next(key for key in keys.list_keys() if key.state == "next")
        click.echo(f"a rotation is already pending: {pending.kid} (created {pending.created_at})")
        return
    signs_from = keyring.signs_from(row.created_at)
    click.echo(f"published {row.kid} ({row.alg}); it signs from {signs_from:%Y-%m-%d %H:%M:%S} UTC")


@keys_cli.command("list")
def keys_list() -> None:
    """List signing keys and their states."""
    for key in keys.list_keys():
        dates = f"created {key.created_at:%Y-%m-%d %H:%M:%S}"
        if key.activated_at:
            dates += f", activated {key.activated_at:%Y-%m-%d %H:%M:%S}"
        if key.retired_at:
            dates += f", retired {key.retired_at:%Y-%m-%d %H:%M:%S}"
        click.echo(f"{key.kid}  {key.alg}  {key.state}  {dates}")


# -- prune ---------------------------------------------------------------------------------------


@click.command("prune")
@with_appcontext
def prune_command() -> None:
    """Delete expired sessions, long-revoked sessions and dead keys.

    A token naming a deleted session is rejected like a revoked one, so deleting is always safe.
    """
    pruned = admin.prune()
    click.echo(f"pruned {pruned.sessions} expired sessions, {pruned.keys} dead keys")


def bind_migrations(app: Flask) -> None:
    """Bind Flask-Migrate to ``app`` (once): for ``flask db`` and ``flask_migrate.upgrade()``."""
    if "migrate" in app.extensions:
        return
    from flask_migrate import Migrate

    Migrate(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True)


class MigrationsGroup(click.Group):
    """``flask db``: stands in for Flask-Migrate's group and hands everything to it when used."""

    def _real(self, ctx: click.Context) -> click.Group:
        bind_migrations(ctx.ensure_object(ScriptInfo).load_app())
        from flask_migrate.cli import db as migrate_cli

        return migrate_cli

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return self._real(ctx).get_params(ctx)

    def invoke(self, ctx: click.Context) -> object:
        return self._real(ctx).invoke(ctx)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self._real(ctx).list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._real(ctx).get_command(ctx, cmd_name)


def register_cli(app: Flask) -> None:
    app.cli.add_command(MigrationsGroup("db", help="Database migrations (Flask-Migrate)."))
    for command in (users_cli, sessions_cli, keys_cli, prune_command):
        app.cli.add_command(command)
