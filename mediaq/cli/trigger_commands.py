"""mediaq watch-folder, mediaq schedule, mediaq scan, mediaq triggers."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from mediaq import db
from mediaq.cli import Env, pass_env, run_in_foreground
from mediaq.cli.render import console, show_rows
from mediaq.files import VIDEO_PATTERNS, ScanSummary, parse_patterns, submit_in_batches, walk_files
from mediaq.outputs import check_input
from mediaq.storage.uri import is_s3
from mediaq.submit import params_from_pairs
from mediaq.triggers import manage
from mediaq.triggers.runner import Triggers
from mediaq.triggers.scan import submit_files

PARAM_HELP = "Override a step parameter (step number, name or action)."


def _absolute(text: str) -> Path:
    return Path(text).expanduser().absolute()


# ---------------------------------------------------------------------- watch folders


@click.group("watch-folder")
def watch_folder() -> None:
    """Hot folders: every file that settles in one becomes a job."""


@watch_folder.command("add")
@click.argument("path")
@click.option("--workflow", "workflow_code", required=True, help="The workflow to submit to.")
@click.option("--pattern", "patterns", multiple=True, metavar="GLOBS",
              help="File name patterns, e.g. '*.mp4,*.mov' (default: every file).")
@click.option("--priority", type=int, help="1..10 (default: the workflow's).")
@click.option("--settle-seconds", type=int, default=10, show_default=True,
              help="A file must be untouched this long before it counts.")
@click.option("--recursive", is_flag=True, help="Watch sub-folders too.")
@click.option("--param", "params", multiple=True, metavar="STEP.KEY=VALUE", help=PARAM_HELP)
@pass_env
def watch_folder_add(env: Env, path: str, workflow_code: str, patterns: tuple[str, ...],
                     priority: int | None, settle_seconds: int, recursive: bool,
                     params: tuple[str, ...]) -> None:
    """Watch PATH (a folder, or a bucket prefix s3://bucket/prefix/); prints the watch
    folder's id as the last word."""
    with env.connect() as conn:
        row = manage.add_watch_folder(
            conn, env.settings, path if is_s3(path) else _absolute(path), workflow_code,
            patterns=parse_patterns(patterns), priority=priority,
            settle_seconds=settle_seconds, recursive=recursive,
            params=params_from_pairs(params))
    click.echo(f"watching {row['path']} for {row['workflow_code']} as #{row['id']}")


@watch_folder.command("list")
@click.option("--json", "as_json_output", is_flag=True, help="Print JSON.")
@pass_env
def watch_folder_list(env: Env, as_json_output: bool) -> None:
    """Watch folders, with what they submitted and their last error."""
    with env.connect() as conn:
        rows = db.fetch_all(conn, "watch_folders_list")
    show_rows(rows, ["id", "path", "workflow_code", "patterns", "settle_seconds", "recursive",
                     "priority", "enabled", "files_submitted", "last_scan_at", "last_error"],
              "Watch folders", as_json_output=as_json_output)


@watch_folder.command("remove")
@click.argument("folder_id", type=int)
@pass_env
def watch_folder_remove(env: Env, folder_id: int) -> None:
    """Stop watching (the jobs it submitted stay)."""
    with env.connect() as conn:
        manage.remove(conn, "watch_folder_remove", folder_id, "watch folder")
    click.echo(f"watch folder #{folder_id} removed")


# ---------------------------------------------------------------------- schedules


@click.group("schedule")
def schedule() -> None:
    """Cron schedules: a job per slot, once across all workers."""


@schedule.command("add")
@click.argument("cron")
@click.option("--workflow", "workflow_code", required=True, help="The workflow to submit to.")
@click.option("--input", "input_path", required=True, help="The job's input file or folder.")
@click.option("--tz", "timezone", default="UTC", show_default=True,
              help="The time zone the expression is read in (e.g. Europe/Paris).")
@click.option("--missed", type=click.Choice(["catch-up", "skip"]), default="catch-up",
              show_default=True,
              help="Slots missed while nothing ran: one job for all of them, or none.")
@click.option("--priority", type=int, help="1..10 (default: the workflow's).")
@click.option("--param", "params", multiple=True, metavar="STEP.KEY=VALUE", help=PARAM_HELP)
@pass_env
def schedule_add(env: Env, cron: str, workflow_code: str, input_path: str, timezone: str,
                 missed: str, priority: int | None, params: tuple[str, ...]) -> None:
    """Submit INPUT to a workflow at every slot of CRON ('*/5 * * * *');
    prints the schedule's id as the last word."""
    with env.connect() as conn:
        row = manage.add_schedule(conn, env.settings, cron, workflow_code,
                                  str(_absolute(input_path)), timezone=timezone,
                                  priority=priority, missed=missed,
                                  params=params_from_pairs(params))
    click.echo(f"schedule '{row['cron']}' ({row['timezone']}) for {row['workflow_code']}, "
               f"first at {row['next_run_at'].isoformat()}, as #{row['id']}")


@schedule.command("list")
@click.option("--json", "as_json_output", is_flag=True, help="Print JSON.")
@pass_env
def schedule_list(env: Env, as_json_output: bool) -> None:
    """Schedules, next slot first."""
    with env.connect() as conn:
        rows = db.fetch_all(conn, "schedules_list")
    show_rows(rows, ["id", "cron", "timezone", "workflow_code", "input_path", "missed",
                     "enabled", "next_run_at", "last_slot_at", "last_job_code", "fired_count",
                     "skipped_count", "last_error"], "Schedules", as_json_output=as_json_output)


@schedule.command("remove")
@click.argument("schedule_id", type=int)
@pass_env
def schedule_remove(env: Env, schedule_id: int) -> None:
    """Delete a schedule (its jobs stay)."""
    with env.connect() as conn:
        manage.remove(conn, "schedule_remove", schedule_id, "schedule")
    click.echo(f"schedule #{schedule_id} removed")


# ---------------------------------------------------------------------- scan, triggers


@click.command("scan")
@click.argument("path")
@click.option("--workflow", "workflow_code", required=True, help="The workflow to submit to.")
@click.option("--pattern", "patterns", multiple=True, metavar="GLOBS",
              help=f"File name patterns (default: {','.join(VIDEO_PATTERNS)}).")
@click.option("--recursive/--no-recursive", default=True, show_default=True)
@click.option("--all", "resubmit", is_flag=True,
              help="Submit files that have a job of the workflow already, too.")
@click.option("--priority", type=int, help="1..10 (default: the workflow's).")
@pass_env
def scan(env: Env, path: str, workflow_code: str, patterns: tuple[str, ...], recursive: bool,
         resubmit: bool, priority: int | None) -> None:
    """Submit a job for every file in PATH that has none yet."""
    folder = check_input(str(_absolute(path)), env.settings.storage.effective_input_roots,
                         kind="directory")
    files = [found.path for found in walk_files(
        folder, parse_patterns(patterns) or VIDEO_PATTERNS, recursive=recursive)]
    summary = ScanSummary(directory=str(folder))
    columns = (TextColumn("scan"), BarColumn(), MofNCompleteColumn(), TextColumn("files"))
    with env.connect() as conn, Progress(*columns, console=console) as bar:
        task = bar.add_task("scan", total=len(files))
        submit_in_batches(
            files, summary,
            lambda batch: submit_files(conn, workflow_code, batch, submitted_by="scan:cli",
                                       skip_existing=not resubmit, priority=priority),
            lambda done: bar.update(task, completed=done))
    click.echo(f"{summary.found} file(s) in {folder}: {summary.submitted} submitted, "
               f"{summary.skipped_existing} had a job already")


@click.command("triggers")
@click.option("--once", is_flag=True, help="One pass over folders and schedules, then exit.")
@pass_env
def triggers(env: Env, once: bool) -> None:
    """Watch folders and fire schedules until stopped (workers do this too)."""
    runner = Triggers(env.settings, env.url)
    submitted = run_in_foreground(env, runner, lambda: runner.run(once=once))
    click.echo(f"triggers {runner.runner_id} stopped after {submitted} job(s)")


COMMANDS = [watch_folder, schedule, scan, triggers]
