"""Rescue jobs whose worker vanished (lease expired), free orphaned slots."""

from __future__ import annotations

import random
import threading

import structlog
from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.logs import log_stamp

log = structlog.get_logger("mediaq.rescuer")


def rescue_once(
    pool: ConnectionPool[db.Connection], worker_id: str, max_rescues: int, lease_seconds: int
) -> list[db.Row]:
    """One pass: expired leases back to the queue (or failed if rescued too often)."""
    with db.transaction(pool) as conn:
        rescued = db.fetch_all(conn, "jobs_rescue_expired",
                               {"worker_id": worker_id, "max_rescues": max_rescues})
        db.execute(conn, "slots_release_orphans")
        db.execute(conn, "workers_mark_lost", {"lease_seconds": lease_seconds})
        fell_back = fall_back(conn)
    for row in rescued:
        log.warning("job:rescued", job_id=row["id"], job_code=row["job_code"], status=row["status"])
    return rescued + fell_back


def fall_back(conn: db.Connection) -> list[db.Row]:
    """Move waiting jobs no live worker can run to their workflow's fallback category
    (``jobs_fall_back``); the rows moved."""
    moved = db.fetch_all(conn, "jobs_fall_back", {"stamp": log_stamp()})
    for row in moved:
        log.info("job:fell_back", job_id=row["id"], job_code=row["job_code"],
                 category=row["resource_category"])
    return moved


class Rescuer(threading.Thread):
    def __init__(
        self, pool: ConnectionPool[db.Connection], worker_id: str, max_rescues: int,
        lease_seconds: int, wake: threading.Event,
    ) -> None:
        super().__init__(name="mediaq-rescuer", daemon=True)
        self.pool = pool
        self.worker_id = worker_id
        self.max_rescues = max_rescues
        self.lease_seconds = lease_seconds
        self.wake = wake
        self.halt = threading.Event()

    def run(self) -> None:
        # Every worker rescues; jitter keeps a fleet from all scanning at once.
        interval = max(0.5, self.lease_seconds / 4)
        while not self.halt.wait(random.uniform(0.75 * interval, 1.25 * interval)):
            try:
                if rescue_once(self.pool, self.worker_id, self.max_rescues, self.lease_seconds):
                    self.wake.set()
            except Exception as exc:
                log.warning("rescuer:error", error=str(exc))
