"""mediaq notifier, mediaq notifications, mediaq webhooks."""

from __future__ import annotations

import sys
from typing import BinaryIO

import click

from mediaq.cli import Env, pass_env, run_in_foreground
from mediaq.cli.render import show_rows
from mediaq.errors import SignatureError
from mediaq.notify import outbox
from mediaq.notify.notifier import Notifier
from mediaq.notify.signing import new_secret, parse_secrets, verify


@click.command("notifier")
@click.option("--until-idle", is_flag=True, help="Exit when nothing is due.")
@pass_env
def notifier(env: Env, until_idle: bool) -> None:
    """Deliver notifications (webhooks, e-mail, Slack) until stopped."""
    runner = Notifier(env.settings, env.url)
    handled = run_in_foreground(env, runner, lambda: runner.run(until_idle=until_idle))
    click.echo(f"notifier {runner.notifier_id} stopped after {handled} notification(s)")


@click.group("notifications", invoke_without_command=True)
@click.option("--status", type=click.Choice(outbox.STATUSES), help="Only rows in this state.")
@click.option("--job", "job_code", help="Only this job's rows.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json_output", is_flag=True, help="Print JSON.")
@click.pass_context
def notifications(ctx: click.Context, status: str | None, job_code: str | None, limit: int,
                  as_json_output: bool) -> None:
    """The notification outbox, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    env = ctx.find_object(Env) or ctx.ensure_object(Env)
    with env.connect() as conn:
        rows = outbox.list_notifications(conn, status=status, job_code=job_code, limit=limit)
    show_rows(rows, ["id", "job_code", "notification_type", "channel", "recipient", "status",
                     "attempts", "last_status_code", "error_message", "sent_at"],
              "Notifications", as_json_output=as_json_output)


@notifications.command("retry")
@click.argument("ids", nargs=-1, type=int, required=True)
@pass_env
def notifications_retry(env: Env, ids: tuple[int, ...]) -> None:
    """Send failed notifications again now (same event id for the receiver)."""
    with env.connect() as conn:
        for notification_id in ids:
            outbox.retry(conn, notification_id)
    click.echo(f"{len(ids)} notification(s) due again")


@click.group("webhooks")
def webhooks() -> None:
    """Signing secrets and verification for webhook receivers."""


@webhooks.command("secret")
def webhooks_secret() -> None:
    """Print a new whsec_ signing secret (for MEDIAQ_WEBHOOK_SECRET)."""
    click.echo(new_secret())


@webhooks.command("verify")
@click.option("--id", "msg_id", required=True, help="The webhook-id header.")
@click.option("--timestamp", required=True, help="The webhook-timestamp header.")
@click.option("--signature", required=True, help="The webhook-signature header.")
@click.option("--secret", help="whsec_ secret(s), comma-separated (default: the setting).")
@click.option("--tolerance", type=int, default=300, show_default=True,
              help="Seconds the timestamp may be away from now.")
@click.argument("body_file", type=click.File("rb"), default="-")
@pass_env
def webhooks_verify(env: Env, msg_id: str, timestamp: str, signature: str,
                    secret: str | None, tolerance: int, body_file: BinaryIO) -> None:
    """Check a delivery's signature: the body from BODY_FILE (default stdin)."""
    configured = env.settings.notifications.webhook_secret
    keys = parse_secrets(secret if secret is not None else configured)
    if not keys:
        raise click.UsageError("no secret: pass --secret or set MEDIAQ_WEBHOOK_SECRET")
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp,
               "webhook-signature": signature}
    try:
        verify(keys, headers, body_file.read(), tolerance_s=tolerance)
    except SignatureError as exc:
        click.echo(f"invalid: {exc}", err=True)
        sys.exit(1)
    click.echo("valid")


COMMANDS = [notifier, notifications, webhooks]
