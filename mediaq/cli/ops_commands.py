"""``mediaq breakers`` and ``mediaq workers``: circuit breakers on actions and the
storage health of workers (issue 25)."""

from __future__ import annotations

import click

from mediaq import breakers
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


COMMANDS = [breakers_group, workers_command]
