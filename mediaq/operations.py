"""What operators do to jobs and queues (shared by the CLI and, later, the HTTP API)."""

from __future__ import annotations

from typing import Any

from mediaq import db
from mediaq.errors import InvalidTransition, JobNotFound, Refused
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
