"""mediaq db …, mediaq config."""

from __future__ import annotations

import sys

import click

from mediaq import embedded, migrate, roles
from mediaq.cli import Env, pass_env
from mediaq.roles import ROLE_KINDS


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
    click.echo(f"database: {env.settings.describe()['database']['url']}")
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
    if not env.settings.database.embedded:
        raise click.UsageError("MEDIAQ_DATABASE_URL is set: mediaq does not manage that server")
    click.echo("stopped" if embedded.stop(env.settings.storage.home) else "not running")


@db_group.command("roles")
@click.option("--login", "logins", multiple=True, metavar="USER:KIND",
              help="Also create LOGIN user USER and grant it mediaq_KIND (submitter or "
                   "reader); repeatable. A new user's password is generated and printed "
                   "once; an existing user keeps its password.")
@click.option("--password-stdin", is_flag=True,
              help="Read the passwords of the --login users from stdin instead, one line "
                   "per --login in order (also sets them for existing users); nothing is "
                   "printed.")
@pass_env
def db_roles(env: Env, logins: tuple[str, ...], password_stdin: bool) -> None:
    """Create the PostgreSQL roles for direct SQL use (safe to run again).

    mediaq_submitter may only call mediaq.submit_job(...) and read its own jobs
    (the view mediaq.my_jobs); mediaq_reader may SELECT every table and view of the
    mediaq schema. Needs the schema owner or a superuser, and CREATEROLE for --login.
    Run it again after every `mediaq db upgrade`.
    """
    wanted = [_parse_login(spec) for spec in logins]
    if len({user for user, _ in wanted}) != len(wanted):
        raise click.BadParameter("a user may appear only once", param_hint="--login")
    passwords: list[str | None] = [None] * len(wanted)
    if password_stdin:
        if not wanted:
            raise click.UsageError("--password-stdin needs at least one --login")
        lines = sys.stdin.read().splitlines()
        if len(lines) < len(wanted) or any(not line for line in lines[:len(wanted)]):
            raise click.UsageError(f"--password-stdin: expected {len(wanted)} non-empty "
                                   "line(s) on stdin, one password per --login")
        passwords = list(lines[:len(wanted)])
    with env.connect() as conn:
        outcomes = roles.apply_roles(conn, [roles.Login(user, role, given) for (user, role), given
                                            in zip(wanted, passwords, strict=True)])
    shown = [o for o in outcomes if o.generated_password]
    for outcome in outcomes:
        if not outcome.generated_password:
            state = ("created" if outcome.created else "password set") \
                if outcome.login.password else "exists, password unchanged"
            click.echo(f"{outcome.login.user}: {state}, member of {outcome.login.role}")
    click.echo("roles mediaq_submitter and mediaq_reader are ready")
    for outcome in shown:
        click.echo(f"{outcome.login.user}: created, member of {outcome.login.role}, "
                   f"password {outcome.generated_password}")
    if shown:
        click.echo("(passwords are shown this once: store them now)", err=True)


def _parse_login(spec: str) -> tuple[str, str]:
    user, _, kind = spec.rpartition(":")
    if not user or kind not in ROLE_KINDS:
        raise click.BadParameter(f"{spec!r}: expected USER:submitter or USER:reader",
                                 param_hint="--login")
    if user.startswith("pg_") or user in ROLE_KINDS.values() or len(user.encode()) > 63:
        raise click.BadParameter(f"{user!r} cannot be a mediaq login user",
                                 param_hint="--login")
    return user, ROLE_KINDS[kind]


@click.command("config")
@pass_env
def config(env: Env) -> None:
    """Print the effective settings by section, as the TOML file's tables name them
    (secrets masked; roots as used when left empty)."""
    for number, (section, values) in enumerate(env.settings.describe().items()):
        click.echo(("\n" if number else "") + f"[{section}]")
        for key, value in values.items():
            click.echo(f"{key:24} {value}".rstrip())


COMMANDS = [db_group, config]
