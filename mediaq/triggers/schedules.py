"""Cron schedules: slots in the schedule's time zone, and firing each slot once.

Whoever runs triggers (every worker, or ``mediaq triggers``) tries to fire due
schedules; the row lock (``FOR UPDATE SKIP LOCKED``) lets one of them handle a
schedule, and the job's idempotency key ``schedule:<id>:<slot>`` makes a second
job for the same slot impossible even so. Slots that passed while nothing ran
are handled by the schedule's ``missed`` policy: ``catch-up`` fires one job for
all of them; ``skip`` fires only if the latest is under a minute late.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from cronsim import CronSim, CronSimError

from mediaq import db
from mediaq.errors import SubmissionRefused
from mediaq.submit import submit

log = structlog.get_logger("mediaq.triggers")

MISSED_POLICIES = ("catch-up", "skip")
SKIP_GRACE = timedelta(seconds=60)
BROKEN_RETRY = timedelta(hours=1)
# Walking slots after a long outage stops here (a per-minute schedule: ten weeks).
MAX_SLOTS_WALKED = 100_000


@dataclass(frozen=True)
class SlotPlan:
    fire_slot: datetime | None  # the slot to submit a job for now, if any
    skipped: int  # due slots that get no job
    next_run_at: datetime


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SubmissionRefused(f"unknown time zone {name!r} (e.g. UTC, Europe/Paris)") from None


def next_slot(cron: str, timezone: str, after: datetime) -> datetime:
    """The first slot of ``cron`` strictly after ``after``, in ``timezone``."""
    try:
        return next(CronSim(cron, after.astimezone(zone(timezone))))
    except CronSimError as exc:
        raise SubmissionRefused(f"bad cron expression {cron!r}: {exc}") from None
    except StopIteration:
        raise SubmissionRefused(f"cron expression {cron!r} never fires") from None


def plan_slots(cron: str, timezone: str, due: datetime, now: datetime, missed: str) -> SlotPlan:
    """What to do about a schedule whose slot ``due`` has come (``due <= now``)."""
    latest, count, upcoming = due, 1, None
    for slot in CronSim(cron, due.astimezone(zone(timezone))):
        if slot > now or count >= MAX_SLOTS_WALKED:
            upcoming = slot if slot > now else next_slot(cron, timezone, now)
            break
        latest, count = slot, count + 1
    assert upcoming is not None
    if missed == "catch-up" or now - latest <= SKIP_GRACE:
        return SlotPlan(fire_slot=latest, skipped=count - 1, next_run_at=upcoming)
    return SlotPlan(fire_slot=None, skipped=count, next_run_at=upcoming)


def fire_due(conn: db.Connection) -> list[str]:
    """Submit the jobs of every due schedule this process gets to lock; their codes."""
    fired: list[str] = []
    error: str | None
    with conn.transaction():
        for row in db.fetch_all(conn, "schedules_claim_due"):
            try:
                plan = plan_slots(row["cron"], row["timezone"], row["next_run_at"],
                                  row["db_now"], row["missed"])
            except (CronSimError, SubmissionRefused) as exc:  # edited by hand in SQL
                plan = SlotPlan(None, 0, row["db_now"] + BROKEN_RETRY)
                job, error = None, f"schedule cannot be read: {exc}"
            else:
                job, error = _submit_slot(conn, row, plan.fire_slot)
            db.execute(conn, "schedule_advanced", {
                "id": row["id"], "next_run_at": plan.next_run_at, "fired_slot": plan.fire_slot,
                "job_id": job["id"] if job else None, "error": error,
                "skipped": plan.skipped,
            })
            if job is not None:
                fired.append(job["job_code"])
            log.info("schedule:slot", schedule_id=row["id"], slot=str(plan.fire_slot),
                     job_code=job["job_code"] if job else None, skipped=plan.skipped,
                     next_run_at=str(plan.next_run_at), error=error)
    return fired


def _submit_slot(conn: db.Connection, row: dict[str, Any],
                 slot: datetime | None) -> tuple[dict[str, Any] | None, str | None]:
    if slot is None:
        return None, None
    try:
        with conn.transaction():  # a savepoint: a refusal must not undo the advance
            job = submit(conn, row["workflow_code"], row["input_path"], priority=row["priority"],
                         params=row["params"],
                         idempotency_key=f"schedule:{row['id']}:{slot.isoformat()}",
                         submitted_by=f"schedule:{row['id']}")
    except SubmissionRefused as exc:
        return None, exc.message
    return job, None
