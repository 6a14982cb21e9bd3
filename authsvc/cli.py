"""flask commands (``flask --app wsgi ...``). ``db upgrade`` comes from Flask-Migrate.

Flask-Migrate is imported only when a ``flask db`` command runs: with Alembic, Mako and Pygments
it is memory a web worker never uses (see ``MigrationsGroup``; bench/README.md has the size).

Passwords are never command-line arguments (they would show in ``ps`` and shell history): they
are prompted for, or read from standard input with ``--password-stdin``.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup, ScriptInfo, with_appcontext

from .config_admin import ROLE_NAME
from .errors import AuthsvcError
from .extensions import db
from .mail.backends import MailError
from .mail.sender import POLL_SECONDS
from .runtime import runtime
from .security import keys
from .services import admin, admin_tokens, operations

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

users_cli = AppGroup("users", help="Create, disable and list accounts.")
sessions_cli = AppGroup("sessions", help="Revoke sessions.")
keys_cli = AppGroup("keys", help="Signing keys: rotate and list.")
mail_cli = AppGroup("mail", help="Check the mail server.")
outbox_cli = AppGroup("outbox", help="Queued mail: list, retry, run a sender.")
admin_cli = AppGroup("admin", help="Tokens for the admin API.")
events_cli = AppGroup("events", help="The audit trail.")


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
@click.option("--email", help="The account's e-mail address (counted as verified).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_create(
    username: str, roles: tuple[str, ...], email: str | None, password_stdin: bool
) -> None:
    """Create an account."""
    try:
        user = admin.create_user(
            username, _read_password(password_stdin), sorted(set(roles)), email
        )
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


@users_cli.command("reset-mfa")
@click.argument("username")
def users_reset_mfa(username: str) -> None:
    """Remove every second factor and recovery code of an account (a lost device), and revoke
    its sessions: its next login takes the password alone."""
    try:
        removed = admin.reset_mfa(username)
    except AuthsvcError as error:
        _fail(error)
    click.echo(f"removed {removed} factors of {username}; its sessions are revoked")


@users_cli.command("list")
def users_list() -> None:
    """List accounts."""
    for user in admin.all_users():
        state = "disabled" if user.disabled_at else "active"
        roles = ",".join(user.roles or []) or "-"
        address = user.email or "-"
        if user.email and not user.email_verified:
            address += " (unverified)"
        click.echo(
            f"{user.id}  {user.username}  {state}  roles={roles}  email={address}  "
            f"{user.created_at:%Y-%m-%d}"
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
    """Delete expired sessions, long-revoked sessions, dead one-time tokens and challenges,
    finished mail, audit events past AUTHSVC_AUDIT_RETENTION_DAYS and dead keys.

    A token naming a deleted session is rejected like a revoked one, so deleting is always safe.
    """
    pruned = operations.prune()
    click.echo(
        f"pruned {pruned.sessions} expired sessions, {pruned.one_time_tokens} one-time tokens, "
        f"{pruned.messages} finished messages, {pruned.challenges} dead MFA challenges, "
        f"{pruned.events} old audit events, {pruned.keys} dead keys"
    )


# -- mail and the outbox -------------------------------------------------------------------------


@mail_cli.command("test")
@click.argument("address")
def mail_test(address: str) -> None:
    """Send a test message to ADDRESS now, through AUTHSVC_SMTP_URL (not the outbox)."""
    try:
        operations.send_test_mail(address)
    except AuthsvcError as error:
        _fail(error)
    except MailError as error:
        raise click.ClickException(f"not sent: {error}") from None
    click.echo(f"sent a test message to {address}")


@outbox_cli.command("list")
@click.option(
    "--status",
    type=click.Choice(["queued", "sent", "failed", "done"]),
    help="Only messages in this state (done: a resolved request for a mail).",
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def outbox_list(status: str | None, limit: int) -> None:
    """The newest messages: id, state, attempts, template, recipient, last error (never the
    message itself)."""
    for row in operations.list_outbox(status, limit):
        when = row.sent_at or row.next_attempt_at
        error = f"  last_error={row.last_error!r}" if row.last_error else ""
        click.echo(
            f"{row.id}  {row.status}  attempts={row.attempts}  {row.template}  {row.recipient}  "
            f"created {row.created_at:%Y-%m-%d %H:%M:%S}  "
            f"{'sent' if row.sent_at else 'next'} {when:%Y-%m-%d %H:%M:%S}{error}"
        )


@outbox_cli.command("retry")
@click.argument("message_ids", nargs=-1, type=click.UUID)
@click.option("--all-failed", is_flag=True, help="Every failed message whose link is still live.")
def outbox_retry(message_ids: tuple[uuid.UUID, ...], all_failed: bool) -> None:
    """Queue failed messages again (those named, or --all-failed)."""
    if bool(message_ids) == all_failed:
        raise click.UsageError("give message ids or --all-failed, not both")
    count = operations.retry_outbox(list(message_ids) if message_ids else None)
    click.echo(f"queued {count} messages again")


@outbox_cli.command("run")
@click.option("--once", is_flag=True, help="Send what is due now, then exit.")
def outbox_run(once: bool) -> None:
    """Send queued mail (for AUTHSVC_OUTBOX_SENDER=external; any number may run at once)."""
    sender = runtime().outbox
    if sender.backend is None:
        raise click.ClickException("no mail server: set AUTHSVC_SMTP_URL")
    if once:
        report = sender.run_once()
        click.echo(f"sent {report.sent}, retrying {report.retried}, failed {report.failed}")
        return
    while True:
        try:
            sender.run_once()
        except Exception as error:  # the database is down, say: the next round tries again
            click.echo(f"outbox: {type(error).__name__}; trying again", err=True)
            db.session.remove()
        sender.wait(POLL_SECONDS)


# -- admin tokens and the audit trail ------------------------------------------------------------

ADMIN_TOKEN_MAX_TTL = 3600


@admin_cli.command("token")
@click.option("--name", default="operator", show_default=True, help="Who the token is for.")
@click.option(
    "--ttl",
    type=click.IntRange(60, ADMIN_TOKEN_MAX_TTL),
    default=900,
    show_default=True,
    help="Lifetime in seconds (it cannot be revoked: keep it short).",
)
def admin_token(name: str, ttl: int) -> None:
    """Print a short-lived token for the admin API (scope admin, subject operator:NAME). It
    may do anything an admin may, grant any role included; every use is audited as NAME."""
    if not ROLE_NAME.match(name):
        raise click.BadParameter("letters, digits and _ . : - only", param_hint="--name")
    token, jti, expires_at = admin_tokens.issue(name, ttl)
    click.echo(token)
    click.echo(f"expires {expires_at:%Y-%m-%d %H:%M:%S} UTC (jti {jti})", err=True)


@events_cli.command("list")
@click.option("--user", "user", help="Only events of this account (username or id).")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
@click.option("--since", type=click.DateTime(), help="Only events at or after (UTC).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
def events_list(
    user: str | None, types: tuple[str, ...], since: datetime | None, limit: int
) -> None:
    """List audit events, newest first."""
    try:
        user_id = _user_id(user) if user else None
    except AuthsvcError as error:
        _fail(error)
    page = admin.list_events(
        limit=limit,
        user_id=user_id,
        types=types,
        since=since.replace(tzinfo=UTC) if since else None,
    )
    for row in page.items:
        detail = json.dumps(row.detail, sort_keys=True, separators=(",", ":"))
        click.echo(
            f"{row.at:%Y-%m-%d %H:%M:%S}  {row.type}  user={row.user_id or '-'}  "
            f"actor={row.actor_id or '-'}  ip={row.ip or '-'}  {detail}"
        )


def _user_id(name_or_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(name_or_id)
    except ValueError:
        return admin.find_user(name_or_id).id


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
    groups = (users_cli, sessions_cli, keys_cli, mail_cli, outbox_cli, admin_cli, events_cli)
    for command in (*groups, prune_command):
        app.cli.add_command(command)
