"""The queues as a whole: queue pause/resume/depth, queues, stats, prune."""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from mediaq import breakers, db, operations, prune
from mediaq.cli import Env, pass_env
from mediaq.cli.render import as_json, fmt, show_rows, table
from mediaq.errors import Refused
from mediaq.storage.setup import client_settings
from mediaq.worker.autoscale import parse_range, workers_for


@click.group("queue")
def queue_group() -> None:
    """Pause or resume a whole queue; show the queue depth."""


def _queue_switch(name: str, paused: bool, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("queue_name")
    @pass_env
    def command(env: Env, queue_name: str) -> None:
        with env.connect() as conn:
            operations.set_queue_paused(conn, queue_name, paused, getpass.getuser())
        click.echo(f"queue {queue_name}: {name}d")

    return command


queue_group.add_command(_queue_switch(
    "pause", True, "Stop starting jobs of QUEUE_NAME (running ones finish)."))
queue_group.add_command(_queue_switch("resume", False, "Start jobs of QUEUE_NAME again."))


@queue_group.command("depth")
@click.option("--json", "as_json_output", is_flag=True, help="Print JSON.")
@click.option("--workers", "scale_range", metavar="MIN:MAX",
              help="Print only how many worker instances the queue calls for (for an "
                   "external autoscaler; see deploy/autoscale/).")
@click.option("--jobs-per-worker", type=click.IntRange(min=1), default=4, show_default=True,
              help="With --workers: parallel jobs one worker instance runs.")
@click.option("--category", "categories", multiple=True,
              type=click.Choice(["cpu", "gpu_encode", "gpu_ai"]),
              help="With --workers: the categories the instances serve (default: all).")
@pass_env
def queue_depth(env: Env, as_json_output: bool, scale_range: str | None,
                jobs_per_worker: int, categories: tuple[str, ...]) -> None:
    """Waiting, eligible and running jobs per resource category (the queue_depth view)."""
    with env.connect() as conn:
        rows = db.fetch_all(conn, "queue_depth")
    if scale_range is not None:
        try:
            policy = parse_range(scale_range)
        except ValueError as exc:
            raise click.BadParameter(str(exc).replace("--autoscale", "--workers")) from None
        click.echo(workers_for(rows, categories or ("cpu", "gpu_encode", "gpu_ai"),
                               jobs_per_worker, policy))
        return
    show_rows(rows, ["resource_category", "waiting", "eligible", "running",
                     "oldest_waiting_age_s", "oldest_eligible_age_s"], title="Queue depth",
              as_json_output=as_json_output)


@click.command("queues")
@pass_env
def queues(env: Env) -> None:
    """The processing queue monitor: jobs waiting and processing per queue, and pauses."""
    with env.connect() as conn:
        rows = db.fetch_all(conn, "queue_monitor")
        paused = db.fetch_all(conn, "queues_paused")
    table(rows, ["queue_name", "jobs_in_queue", "waiting", "processing", "avg_priority",
                 "next_scheduled", "paused"], title="Processing queues")
    idle_paused = [p["queue_name"] for p in paused
                   if p["queue_name"] not in {r["queue_name"] for r in rows}]
    if idle_paused:
        click.echo(f"paused (no jobs waiting): {', '.join(idle_paused)}")


@click.command("stats")
@click.option("--json", "as_json_output", is_flag=True, help="Print JSON.")
@pass_env
def stats(env: Env, as_json_output: bool) -> None:
    """Queue counters, VRAM used/available, average processing time."""
    with env.connect() as conn:
        data = operations.stats(conn)
        data["open_breakers"] = breakers.listing(conn)
        data["claim_problems"] = breakers.claim_problems(conn)
    if as_json_output:
        click.echo(as_json(data))
        return
    open_breakers, storage = data.pop("open_breakers"), data.pop("claim_problems")
    endpoints = data.pop("endpoints")
    counts = data.pop("notifications")
    for key, value in data.items():
        click.echo(f"{key:26} {fmt(value)}")
    click.echo(f"{'notifications':26} " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if endpoints:
        table(endpoints, ["endpoint", "state", "consecutive_failures", "open_until",
                          "last_error"], title="Notification endpoints (circuit breakers)")
    if open_breakers:
        table(open_breakers, ["action", "host", "state", "failures", "reopen_at",
                              "last_error"], title="Circuit breakers on actions")
    if storage:
        table(storage, ["worker_id", "host", "claim_problem"],
              title="Workers not claiming (storage)")


@click.command("prune")
@click.option("--older-than", "older_than", metavar="AGE",
              help="Jobs completed longer ago than this: 30d, 12h, 90m "
                   "[default: retention_days].")
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
@click.option("--archive", "archive_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Append each pruned job (with its step executions) as one JSON line.")
@click.option("--keep-dead-letters", is_flag=True, help="Keep failed jobs.")
@click.option("--outputs", "remove_outputs", is_flag=True,
              help="Also remove each pruned job's folder <output_root>/<job_code> (with "
                   "an s3:// output root: the objects under it; --dry-run lists them).")
@click.option("--json", "as_json_output", is_flag=True, help="Print the counts as JSON.")
@pass_env
def prune_command(env: Env, older_than: str | None, dry_run: bool, archive_path: Path | None,
                  keep_dead_letters: bool, remove_outputs: bool, as_json_output: bool) -> None:
    """Delete finished jobs (completed, cancelled and failed) completed before the
    retention, with their step executions, events, notifications and estimates, 1,000
    jobs per transaction. A job with undelivered notifications is kept until they are
    delivered; outputs on disk stay unless --outputs is given."""
    if older_than is None:
        days = env.settings.storage.retention_days
        if days == 0:
            raise Refused("retention_days is 0 (never prune): give --older-than")
        age = prune.parse_age(f"{days}d")
    else:
        age = prune.parse_age(older_than)
    storage = env.settings.storage
    output_root: Path | prune.ObjectOutputs | None = None
    if remove_outputs:
        output_root = (prune.ObjectOutputs.open(storage.remote_output_root,
                                                client_settings(storage))
                       if storage.remote_output_root else storage.outputs)
    listed: list[str] | None = None
    if dry_run:
        with env.connect() as conn:
            report = prune.preview(conn, age, keep_dead_letters=keep_dead_letters)
            if output_root is not None:
                listed = prune.would_remove(output_root, prune.prunable_codes(
                    conn, age, keep_dead_letters=keep_dead_letters))
    else:
        with env.connect_batches() as conn:
            if archive_path is None:
                report = prune.prune(conn, age, keep_dead_letters=keep_dead_letters,
                                     output_root=output_root)
            else:
                with archive_path.open("a", encoding="utf-8") as archive:
                    report = prune.prune(conn, age, keep_dead_letters=keep_dead_letters,
                                         archive=archive, output_root=output_root)
    if as_json_output:
        data = report.as_dict()
        if listed is not None:
            data["would_remove"] = listed
        click.echo(as_json(data))
    else:
        for location in listed or []:
            click.echo(f"would remove {location}")
        click.echo(report.summary())


COMMANDS = [queue_group, queues, stats, prune_command]
