"""What operators do to jobs and queues (shared by the CLI and, later, the HTTP API)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from mediaq import db
from mediaq.errors import InvalidTransition, JobNotFound, Refused
from mediaq.job_filter import JobFilter, normalise_reason
from mediaq.logs import log_line
from mediaq.notify import outbox
from mediaq.states import CLAIMABLE, JobStatus


def find_job(conn: db.Connection, ref: str) -> db.Row:
    row = db.fetch_one(conn, "job_find", {"ref": ref})
    if row is None:
        raise JobNotFound(f"job {ref} does not exist")
    return row


def _transition(conn: db.Connection, ref: str, query: str, verb: str, line: str) -> db.Row:
    job = find_job(conn, ref)
    row = db.fetch_one(conn, query, {"job_id": job["id"], "log_line": log_line(line)})
    if row is None:
        raise InvalidTransition(f"job {job['job_code']} is {job['status']}: cannot {verb} it")
    return {"job_code": job["job_code"], **row}


def cancel(conn: db.Connection, ref: str, by: str = "admin") -> db.Row:
    """Cancel a waiting job at once; ask a running one to stop."""
    return _transition(conn, ref, "job_cancel", "cancel", f"--- JOB CANCELLED BY {by.upper()} ---")


def pause(conn: db.Connection, ref: str, by: str = "admin") -> db.Row:
    return _transition(conn, ref, "job_pause", "pause", f"--- JOB PAUSED BY {by.upper()} ---")


def resume(conn: db.Connection, ref: str, by: str = "admin") -> db.Row:
    return _transition(conn, ref, "job_resume", "resume", f"--- JOB RESUMED BY {by.upper()} ---")


def retry(conn: db.Connection, ref: str, by: str = "admin") -> db.Row:
    job = find_job(conn, ref)
    attempt = int(job["retry_count"] or 0) + 1
    return _transition(conn, ref, "job_retry", "retry", f"--- RETRY ATTEMPT {attempt} ---")


PRIORITIES = range(1, 11)
"""Job priorities: 10 is the most urgent; jobs of one priority start first come, first served."""

WAITING: tuple[JobStatus, ...] = (*CLAIMABLE, JobStatus.PAUSED)
"""The statuses in which a job's priority may still change (job_set_priority_if_waiting's
guard, and the dashboard's REPRIORITISABLE: tests/test_job_transitions.py checks)."""


def set_priority(conn: db.Connection, ref: str, priority: int, by: str = "admin", *,
                 lowest_first: bool = False) -> db.Row:
    """Give a waiting job (pending, queued or paused) a new priority, 1..10 with 10 the most
    urgent; with ``lowest_first``, 1 is the most urgent (1 becomes 10, 10 becomes 1).

    Refused for a priority outside 1..10; InvalidTransition (a Conflict) once the job
    is processing or finished."""
    if isinstance(priority, bool) or not isinstance(priority, int) or priority not in PRIORITIES:
        most = "1" if lowest_first else "10"
        raise Refused(f"priority must be a whole number from 1 to 10 ({most} is the most urgent)"
                      f", not {priority!r}")
    stored = 11 - priority if lowest_first else priority
    job = find_job(conn, ref)
    row = db.fetch_one(conn, "job_set_priority_if_waiting", {
        "job_id": job["id"], "priority": stored,
        "log_line": log_line(f"--- PRIORITY SET TO {stored} BY {by.upper()} ---")})
    if row is None:
        now = find_job(conn, ref)  # the status that refused it, not the one read before
        raise InvalidTransition(f"{job['job_code']}: priority can change only while the job "
                                f"waits; it is {now['status']}")
    return {"job_code": job["job_code"], **row}


def set_queue_paused(conn: db.Connection, queue_name: str, paused: bool, by: str) -> None:
    db.execute(conn, "queue_set_paused", {"queue_name": queue_name, "paused": paused, "by": by})
    if not paused:
        db.execute(conn, "queue_resumed_wakeup")


def stats(conn: db.Connection) -> dict[str, Any]:
    row = db.fetch_one(conn, "job_stats")
    assert row is not None
    return {**row, **outbox.health(conn)}


# ---------------------------------------------------------------------------------------
# Dead letters in bulk: grouped, retried or cancelled by a filter (mediaq/job_filter.py)
# ---------------------------------------------------------------------------------------

BULK_BATCH = 500
"""Jobs moved per transaction by a bulk retry or cancel."""
SAMPLE = 10
"""Job codes shown by a dry run (and by a real one)."""
RETRYABLE = (JobStatus.FAILED.value,)
CANCELLABLE = tuple(s.value for s in WAITING)


def matching_jobs(conn: db.Connection, where: JobFilter, statuses: tuple[str, ...],
                  *, by_failure: bool = True) -> list[db.Row]:
    """The jobs in ``statuses`` that ``where`` matches, by id."""
    step = where.step
    rows = db.fetch_all(conn, "jobs_matching_filter", {
        "statuses": list(statuses), "workflow": where.workflow,
        "step_number": step if isinstance(step, int) else None,
        "step_name": step if isinstance(step, str) else None,
        "error_class": where.error_class, "since": where.since, "until": where.until,
        "submitted_by": where.submitted_by, "by_failure": by_failure})
    if not where.has_reason:
        return rows
    return [row for row in rows if where.matches_reason(row["error_message"])]


def dead_letter_groups(conn: db.Connection, where: JobFilter | None = None) -> list[dict[str, Any]]:
    """Failed jobs grouped by workflow, step, error class and normalised reason: the count,
    the oldest and newest failure and the newest job as an example; largest group first."""
    rows = matching_jobs(conn, where or JobFilter(), RETRYABLE)
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        reason = normalise_reason(row["error_message"])
        key = (row["workflow_code"], row["step_number"], row["error_class"], reason)
        group = groups.get(key)
        failed_at = row["failed_at"]
        if group is None:
            groups[key] = {"workflow_code": row["workflow_code"],
                           "step_number": row["step_number"], "step_name": row["step_name"],
                           "error_class": row["error_class"], "reason": reason, "count": 1,
                           "oldest_failure": failed_at, "newest_failure": failed_at,
                           "example_job": row["job_code"],
                           "example_message": row["error_message"]}
            continue
        group["count"] += 1
        if failed_at is not None:
            if group["oldest_failure"] is None or failed_at < group["oldest_failure"]:
                group["oldest_failure"] = failed_at
            if group["newest_failure"] is None or failed_at >= group["newest_failure"]:
                group["newest_failure"] = failed_at
                group["example_job"] = row["job_code"]
                group["example_message"] = row["error_message"]
    return sorted(groups.values(), key=lambda g: (-g["count"], g["workflow_code"],
                                                  g["step_number"] or 0, g["reason"]))


def _note(note: str | None) -> str:
    if note is None:
        return ""
    text = " ".join(note.split())
    if not text:
        return ""
    if "\x00" in text or len(text) > 500:
        raise Refused("a note is one line of at most 500 characters, without NUL")
    return text


def _batches(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), BULK_BATCH):
        yield ids[start:start + BULK_BATCH]


def _bulk(conn: db.Connection, where: JobFilter, statuses: tuple[str, ...], *,
          by_failure: bool, dry_run: bool,
          act: Callable[[db.Row], db.Row | None]) -> dict[str, Any]:
    found = matching_jobs(conn, where, statuses, by_failure=by_failure)
    result: dict[str, Any] = {"filter": str(where), "matched": len(found),
                              "sample": [row["job_code"] for row in found[:SAMPLE]],
                              "dry_run": dry_run, "changed": 0, "skipped": 0}
    if dry_run:
        return result
    for ids in _batches([int(row["id"]) for row in found]):
        # one transaction per batch (a savepoint inside a caller's transaction)
        with conn.transaction():
            locked = db.fetch_all(conn, "jobs_lock_for_bulk",
                                  {"job_ids": ids, "statuses": list(statuses)})
            moved = sum(1 for job in locked if act(job) is not None)
        result["changed"] += moved
        result["skipped"] += len(ids) - moved
    return result


def retry_where(conn: db.Connection, where: JobFilter, by: str = "admin",
                note: str | None = None, *, dry_run: bool = False) -> dict[str, Any]:
    """Retry every failed job ``where`` matches, BULK_BATCH per transaction, each through
    job_retry with a log line naming ``by`` and the note. A job retried meanwhile (or held
    by another transaction) is skipped, so a second run retries nothing new.

    Returns ``filter`` (canonical text), ``matched``, ``changed`` (retried), ``skipped``,
    ``sample`` (up to 10 job codes) and ``dry_run``; a dry run changes nothing."""
    text = _note(note)
    tail = f" BY {by.upper()} (bulk retry" + (f"; note: {text}" if text else "") + ") ---"

    def act(job: db.Row) -> db.Row | None:
        attempt = int(job["retry_count"] or 0) + 1
        return db.fetch_one(conn, "job_retry", {
            "job_id": job["id"], "log_line": log_line(f"--- RETRY ATTEMPT {attempt}{tail}")})

    return _bulk(conn, where, RETRYABLE, by_failure=True, dry_run=dry_run, act=act)


def cancel_where(conn: db.Connection, where: JobFilter, by: str = "admin",
                 note: str | None = None, *, dry_run: bool = False) -> dict[str, Any]:
    """Cancel every waiting (pending, queued, paused) job ``where`` matches, as
    retry_where does (since/until read the submission time). Running jobs are left
    alone: cancel them one by one."""
    text = _note(note)
    line = f"--- JOB CANCELLED BY {by.upper()} (bulk cancel" + (
        f"; note: {text}" if text else "") + ") ---"

    def act(job: db.Row) -> db.Row | None:
        return db.fetch_one(conn, "job_cancel", {"job_id": job["id"],
                                                 "log_line": log_line(line)})

    return _bulk(conn, where, CANCELLABLE, by_failure=False, dry_run=dry_run, act=act)
