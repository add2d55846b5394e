"""mediaq db …, mediaq config."""

from __future__ import annotations

import click

from mediaq import embedded, migrate
from mediaq.cli import Env, pass_env


@click.group("db")
def db_group() -> None:
    """The database: migrations and the embedded server."""


@db_group.command("upgrade")
@pass_env
def db_upgrade(env: Env) -> None:
    """Create or upgrade the mediaq schema (safe to run again)."""
    before, after = migrate.upgrade(env.url)
    if before == after:
        click.echo(f"schema already at revision {after}")
    else:
        click.echo(f"schema upgraded from {before or 'nothing'} to revision {after}")


@db_group.command("status")
@pass_env
def db_status(env: Env) -> None:
    """Show the schema revision the database is at and the one this mediaq needs."""
    current, head = migrate.current_revision(env.url), migrate.head_revision()
    click.echo(f"database: {env.settings.describe()['database']}")
    click.echo(f"schema revision: {current or 'none'} (this mediaq needs {head})")
    if current != head:
        raise SystemExit(1)


@db_group.command("url")
@pass_env
def db_url(env: Env) -> None:
    """Print the connection URL (starting the embedded server if needed), for psql."""
    click.echo(env.url)


@db_group.command("stop")
@pass_env
def db_stop(env: Env) -> None:
    """Stop the embedded PostgreSQL server."""
    if not env.settings.uses_embedded:
        raise click.UsageError("MEDIAQ_DATABASE_URL is set: mediaq does not manage that server")
    click.echo("stopped" if embedded.stop(env.settings.home) else "not running")


@click.command("config")
@pass_env
def config(env: Env) -> None:
    """Print the effective settings (secrets masked)."""
    for key, value in env.settings.describe().items():
        click.echo(f"{key:24} {value}")


COMMANDS = [db_group, config]
