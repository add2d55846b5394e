"""``mediaq breakers``, ``mediaq workers`` and ``mediaq hosts``: circuit breakers on
actions, the storage health of workers, and an operator's pause of a host (issue 25)."""

from __future__ import annotations

import getpass

import click

from mediaq import breakers, hosts
from mediaq.cli import Env, pass_env
from mediaq.cli.render import show_rows

BREAKER_COLUMNS = ["action", "host", "state", "failures", "reopen_at", "times_opened",
                   "last_error"]


@click.group("breakers", invoke_without_command=True)
@click.option("--all", "everything", is_flag=True, help="Closed breakers too.")
@click.option("--json", "as_json_output", is_flag=True, help="Print JSON.")
@click.pass_context
def breakers_group(ctx: click.Context, everything: bool, as_json_output: bool) -> None:
    """Circuit breakers on actions: those open or half-open (host '-': every host).
    Steps of an action whose breaker is open wait (waiting_reason) instead of failing."""
    if ctx.invoked_subcommand is not None:
        return
    env = ctx.ensure_object(Env)
    with env.connect() as conn:
        rows = breakers.listing(conn, everything=everything)
    if not rows and not as_json_output:
        click.echo("no open breakers")
        return
    show_rows(rows, BREAKER_COLUMNS, "Circuit breakers on actions",
              as_json_output=as_json_output)


@breakers_group.command("close")
@click.argument("action")
@click.option("--host", help="Only this host's breaker (and the action-wide one).")
@pass_env
def close_breaker(env: Env, action: str, host: str | None) -> None:
    """Close ACTION's breakers (on every host unless --host); the jobs waiting for them
    may start at once."""
    with env.connect() as conn:
        closed = breakers.close(conn, action, host)
    if not closed:
        click.echo(f"no open breaker for action {action!r}")
        return
    for row in closed:
        click.echo(f"closed: {row['action']} on {row['host'] or 'every host'}")


@click.command("workers")
@click.option("--json", "as_json_output", is_flag=True, help="Print JSON.")
@pass_env
def workers_command(env: Env, as_json_output: bool) -> None:
    """Workers (running, draining, or stopped in the last day), and why one does not
    claim (claim_problem: a root missing or unwritable, the output disk below its floor)."""
    with env.connect() as conn:
        rows = breakers.workers(conn)
    show_rows(rows, ["worker_id", "host", "status", "heartbeat_at", "claim_problem"],
              "Workers", as_json_output=as_json_output)


@click.group("hosts")
def hosts_group() -> None:
    """Pause or resume a whole host's claims (its running jobs go on and finish)."""


@hosts_group.command("pause")
@click.argument("host")
@pass_env
def pause_host(env: Env, host: str) -> None:
    """Stop HOST's workers claiming new work (within their 10 s admission check)."""
    with env.connect() as conn:
        hosts.pause(conn, host, by=f"cli:{getpass.getuser()}")
    click.echo(f"{host}: claims paused")


@hosts_group.command("resume")
@click.argument("host")
@pass_env
def resume_host(env: Env, host: str) -> None:
    """Let HOST's workers claim again."""
    with env.connect() as conn:
        hosts.resume(conn, host)
    click.echo(f"{host}: claims resumed")


COMMANDS = [breakers_group, workers_command, hosts_group]
