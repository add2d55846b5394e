"""Submitting and operating jobs: submit, jobs, show, watch, retry, cancel, pause, resume,
priority, dead-letters (and retry/cancel --where in bulk). The queues as a whole are
``queue_commands``'s."""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path
from typing import Any, TextIO

import click
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from mediaq import db, operations
from mediaq.cli import Env, pass_env
from mediaq.cli.render import as_json, console, draw_graph, fmt, show_rows, table
from mediaq.errors import SubmissionRefused
from mediaq.job_filter import parse_filter
from mediaq.outputs import check_input
from mediaq.states import TERMINAL
from mediaq.storage.setup import canonical, check_submitted
from mediaq.storage.uri import is_s3
from mediaq.submit import params_from_pairs, submit, submit_batch


@click.command("submit")
@click.argument("workflow_code")
@click.argument("input_paths", nargs=-1)
@click.option("--from-list", "path_list", type=click.File("r"),
              help="Also submit the paths in this file, one per line ('-': standard input).")
@click.option("--priority", type=int, help="1..10, larger is more urgent.")
@click.option("--param", "params", multiple=True, metavar="STEP.KEY=VALUE",
              help="Override a step parameter (step number, name or action).")
@click.option("--metadata", help="JSON object stored as the job's input_metadata.")
@click.option("--notify", multiple=True, metavar="URL|mailto:ADDR", help="Who to tell.")
@click.option("--key", "idempotency_key", help="Idempotency key: the same key, the same job.")
@pass_env
def submit_command(
    env: Env, workflow_code: str, input_paths: tuple[str, ...], path_list: TextIO | None,
    priority: int | None, params: tuple[str, ...], metadata: str | None,
    notify: tuple[str, ...], idempotency_key: str | None,
) -> None:
    """Submit each INPUT_PATH to a workflow, all or none; prints one job code per line.

    Many paths (thousands, with --from-list) go in as one statement, unless a job needs
    --metadata or --notify of its own."""
    texts = list(input_paths) + ([line.strip() for line in path_list if line.strip()]
                                 if path_list is not None else [])
    if not texts:
        raise SubmissionRefused("no input path given (INPUT_PATH or --from-list)")
    if idempotency_key is not None and len(texts) > 1:
        raise SubmissionRefused("--key names one job: give one input path with it")
    resolved = [_checked_input(env, text) for text in texts]
    meta = _parse_metadata(metadata)
    overrides = params_from_pairs(params)
    with env.connect() as conn:
        if len(resolved) > 1 and meta is None and not notify:
            codes = submit_batch(conn, workflow_code, resolved, priority=priority,
                                 params=overrides, submitted_by=getpass.getuser())
        else:
            codes = [submit(conn, workflow_code, path, priority=priority, params=overrides,
                            metadata=meta, notify=notify, idempotency_key=idempotency_key,
                            submitted_by=getpass.getuser())["job_code"] for path in resolved]
    for code in codes:
        click.echo(f"submitted {code}")


def _checked_input(env: Env, text: str) -> Path | str:
    """An input path made absolute and checked against the input roots (an ``s3://``
    object: against the bucket-prefix roots, and there); a local path is stored as its
    canonical form (``MEDIAQ_PATH_MAP``)."""
    if is_s3(text):
        return check_submitted(text, env.settings.storage)
    path = Path(text).expanduser()
    typed = text if "://" in text or path.is_absolute() else str(Path.cwd() / path)
    kind = "directory" if Path(typed).is_dir() else "file"  # a folder for a scan workflow
    checked = check_input(typed, env.settings.storage.effective_input_roots, kind=kind)
    return canonical(str(checked), env.settings.storage)


def _parse_metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SubmissionRefused(f"--metadata is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise SubmissionRefused("--metadata must be a JSON object")
    return value


@click.command("jobs")
@click.option("--status", help="Only jobs in this status.")
@click.option("--workflow", "workflow_code", help="Only jobs of this workflow.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json_output", is_flag=True, help="Print JSON.")
@pass_env
def jobs(env: Env, status: str | None, workflow_code: str | None, limit: int,
         as_json_output: bool) -> None:
    """The job status dashboard: failed, then running, waiting, paused and finished jobs."""
    with env.connect() as conn:
        rows = db.fetch_all(conn, "jobs_dashboard",
                            {"status": status, "workflow_code": workflow_code, "limit": limit})
    show_rows(rows, ["job_code", "workflow_name", "status", "current_step", "total_steps",
                     "progress_percent", "priority", "submitted_by", "submitted_at",
                     "started_at", "completed_at", "error_message"],
              "Job status dashboard", as_json_output=as_json_output)


@click.command("show")
@click.argument("job")
@pass_env
def show(env: Env, job: str) -> None:
    """A job's details: steps, timings, outputs, log and error."""
    with env.connect() as conn:
        row = operations.find_job(conn, job)
        steps = db.fetch_all(conn, "job_steps_detail",
                             {"job_id": row["id"], "workflow_id": row["workflow_id"]})
        eta = db.fetch_one(conn, "job_eta", {"job_id": row["id"]}) or {}
    for key in ("job_code", "workflow_code", "workflow_version", "status", "progress_percent",
                "priority", "resource_category", "vram_required", "input_file_path",
                "output_file_path", "retry_count", "max_retries", "retry_after", "rescue_count",
                "worker_id", "attempt", "waiting_reason", "submitted_by", "submitted_at",
                "started_at", "completed_at", "error_message"):
        if row.get(key) not in (None, ""):
            click.echo(f"{key:18} {fmt(row[key])}")
    for key in ("estimated_start", "estimated_finish"):
        if eta.get(key) is not None:  # from past runs of the workflow and the queue ahead
            click.echo(f"{key:18} {fmt(eta[key])}")
    if eta.get("eta_blocked_reason"):  # no start is promised: no live worker can run it
        click.echo(f"{'eta_blocked_reason':18} {eta['eta_blocked_reason']}")
    table(steps, ["step_number", "step_name", "action", "status", "executions", "duration_ms",
                  "error_message"], title="Steps")
    draw_graph(steps, _task_label, title="Tasks")
    outputs = (row.get("output_metadata") or {}).get("outputs", [])
    if outputs:
        table(outputs, ["path", "role", "format", "width", "height", "size_bytes"],
              title="Outputs")
    if row["log"]:
        console.print("[bold]Log[/bold]")
        click.echo(row["log"].rstrip())


def _task_label(step: dict[str, Any]) -> str:
    """A step's state in the job's graph: its task's state and where it runs or ran; a
    fanned-out step's items each with theirs (they run side by side on several hosts)."""
    tasks = step.get("tasks") or []
    items = [t for t in tasks if t.get("item") is not None]
    if items:
        done = sum(1 for t in items if t["state"] == "completed")
        return f"{done}/{len(items)} items completed: " + "; ".join(
            f"{t['item'] + 1} {_where(t['state'], t)}" for t in items)
    state = tasks[0]["state"] if tasks else (step["status"] or "waiting")
    if state == "skipped":  # decided, never run: no worker to name
        return state
    worker = {"worker": step["worker_id"], "host": step["host"]} if not tasks else tasks[0]
    return _where(state, worker)


def _where(state: str, task: dict[str, Any]) -> str:
    worker, host = task.get("worker"), task.get("host")
    if not worker or state in ("waiting", "ready", "skipped"):
        return state
    return f"{state} on {worker}" + (f" ({host})" if host and host not in worker else "")


@click.command("watch")
@click.argument("job")
@click.option("--interval", default=0.5, show_default=True, help="Seconds between reads.")
@pass_env
def watch(env: Env, job: str, interval: float) -> None:
    """A live progress bar until the job ends; exits 1 if it failed."""
    with env.connect() as conn:
        found = operations.find_job(conn, job)
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[stage]}"))
    with Progress(*columns, console=console, transient=False) as bar, \
            db.connect(env.url, autocommit=True) as conn:
        task = bar.add_task(found["job_code"], total=100, stage="")
        while True:
            state = db.fetch_one(conn, "job_watch", {"job_id": found["id"]})
            assert state is not None
            stage = f"{state['status']} · step {state['current_step']}/{state['total_steps']}"
            if state["progress_stage"]:
                stage += f" · {state['progress_stage']}"
            if state["waiting_reason"]:
                stage += f" · waiting: {state['waiting_reason']}"
            if state["status"] in ("pending", "queued") and state["estimated_start"]:
                stage += f" · starts ~{state['estimated_start'].astimezone():%H:%M:%S}"
            elif state["status"] in ("pending", "queued") and state["eta_blocked_reason"]:
                stage += f" · not starting: {state['eta_blocked_reason']}"
            bar.update(task, completed=float(state["progress_percent"] or 0), stage=stage)
            if state["status"] in TERMINAL:
                break
            time.sleep(interval)
    click.echo(f"{found['job_code']} {state['status']}"
               + (f": {state['error_message']}" if state["error_message"] else ""))
    if state["status"] != "completed":
        raise SystemExit(1)


def _operator_command(name: str, fn: Any, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("job")
    @pass_env
    def command(env: Env, job: str) -> None:
        with env.connect() as conn:
            result = fn(conn, job, by=getpass.getuser())
        _say_moved(result)

    return command


def _say_moved(result: dict[str, Any]) -> None:
    note = ""
    if result.get("cancel_requested"):
        note = " (cancel requested; the worker stops it within seconds)"
    elif result.get("pause_requested"):
        note = " (pause requested; the worker hands it back within seconds)"
    click.echo(f"{result['job_code']}: {result['status']}{note}")


def _bulk_command(name: str, one: Any, many: Any, help_text: str, what: str) -> click.Command:
    """``mediaq retry|cancel JOB`` for one job, or ``--where FILTER`` for many."""

    @click.command(name, help=help_text)
    @click.argument("job", required=False)
    @click.option("--where", "where_text", metavar="FILTER",
                  help="Every job the filter matches (see `mediaq dead-letters --help`).")
    @click.option("--dry-run", is_flag=True, help="With --where: count and sample, change nothing.")
    @click.option("--note", help="With --where: a note for each job's log line.")
    @click.option("--json", "as_json_output", is_flag=True, help="With --where: print JSON.")
    @pass_env
    def command(env: Env, job: str | None, where_text: str | None, dry_run: bool,
                note: str | None, as_json_output: bool) -> None:
        if (job is None) == (where_text is None):
            raise click.UsageError("give a JOB or --where FILTER, not both")
        if where_text is None:
            if dry_run or note is not None or as_json_output:
                raise click.UsageError("--dry-run, --note and --json go with --where")
            with env.connect() as conn:
                _say_moved(one(conn, job, by=getpass.getuser()))
            return
        where = parse_filter(where_text)
        with env.connect_batches() as conn:
            result = many(conn, where, by=getpass.getuser(), note=note, dry_run=dry_run)
        if as_json_output:
            click.echo(as_json(result))
            return
        verb = "retried" if name == "retry" else "cancelled"
        if dry_run:
            click.echo(f"dry run: {result['matched']} {what} jobs match {result['filter']}; "
                       "nothing changed")
        else:
            click.echo(f"{verb} {result['changed']} of {result['matched']} matching {what} "
                       f"jobs ({result['skipped']} skipped: moved or held meanwhile)")
        if result["sample"]:
            more = result["matched"] - len(result["sample"])
            click.echo("sample: " + ", ".join(result["sample"])
                       + (f" (and {more} more)" if more > 0 else ""))

    return command


@click.command("dead-letters")
@click.option("--where", "where_text", metavar="FILTER", help="Only failed jobs it matches.")
@click.option("--json", "as_json_output", is_flag=True, help="Print JSON.")
@pass_env
def dead_letters(env: Env, where_text: str | None, as_json_output: bool) -> None:
    """Failed jobs grouped by workflow, step, error class and normalised reason.

    The reason is the error message with its variable parts replaced: <time>, <id>,
    <job>, <url>, <file> (a path or file name), <hex>, <n>. `mediaq retry --where FILTER` retries a
    group; FILTER is clauses separated by spaces, each KEY=VALUE (reason also
    reason~TEXT or reason~/REGEX/), values in double quotes when they hold spaces:

    \b
      workflow=WF-X           the workflow code
      step=2 | step=Resize    the step it failed at: number, name or action
      class=permanent         permanent, transient, system or cancelled
      reason="<file>: truncated at <n> s of <n> s"   the normalised reason, as listed
      reason~truncated        the message holds this text (any case)
      reason~/trunc.*s$/      the message matches this regular expression
      since=2026-12-01 until=2026-12-02T12:00   failed at (UTC; or an age: 30m, 12h, 7d)
      submitted_by=alice
    """
    where = parse_filter(where_text) if where_text is not None else None
    with env.connect() as conn:
        groups = operations.dead_letter_groups(conn, where)
    if as_json_output:
        click.echo(as_json(groups))
        return
    shown = [{**g, "step": _step_label(g), "reason": escape(g["reason"])} for g in groups]
    table(shown, ["count", "workflow_code", "step", "error_class", "reason",
                  "oldest_failure", "newest_failure", "example_job"],
          title=f"Dead letters: {sum(g['count'] for g in groups)} failed jobs, "
                f"{len(groups)} groups")


def _step_label(group: dict[str, Any]) -> str:
    number, name = group["step_number"], group["step_name"]
    return f"{number} {name}" if name else fmt(number)


# ignore_unknown_options: "-1" is a number to refuse in one line, not an unknown option
@click.command("priority", context_settings={"ignore_unknown_options": True})
@click.argument("job")
@click.argument("priority", type=int, metavar="N")
@pass_env
def priority_command(env: Env, job: str, priority: int) -> None:
    """Give a waiting (pending, queued or paused) JOB priority N: 1..10, 10 the most urgent.

    Exits 1 once the job is processing or finished, or for N outside 1..10."""
    with env.connect() as conn:
        result = operations.set_priority(conn, job, priority, by=getpass.getuser())
    click.echo(f"{result['job_code']}: priority {result['previous_priority']} -> "
               f"{result['priority']} ({result['status']})")


COMMANDS = [
    submit_command, jobs, show, watch, priority_command, dead_letters,
    _bulk_command("retry", operations.retry, operations.retry_where,
                  "Send a failed or cancelled JOB back to the queue, or with --where every "
                  "failed job the filter matches (500 per transaction; see `mediaq "
                  "dead-letters --help` for the filter).", "failed"),
    _bulk_command("cancel", operations.cancel, operations.cancel_where,
                  "Cancel a JOB (a running one within seconds), or with --where every "
                  "waiting (pending, queued, paused) job the filter matches; since/until "
                  "then read the submission time.", "waiting"),
    _operator_command("pause", operations.pause, "Hold a job back (a running one is handed back)."),
    _operator_command("resume", operations.resume, "Let a paused job run again."),
]
