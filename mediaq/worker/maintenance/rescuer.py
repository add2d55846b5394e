"""Rescue jobs whose worker vanished (its session ended, or its lease expired), free
orphaned slots.

A killed worker's session ends at once and frees its liveness lock
(worker/listener.py); ``jobs_rescue_expired`` rescues such a worker's jobs without
waiting for the lease, so every worker runs that one statement every
``DEAD_SESSION_SCAN_S`` (a kill -9 is rescued within about a second). The rest of the
pass (orphaned slots, silent workers, fallbacks) keeps its quarter-lease pace. A frozen
or cut-off worker keeps its session and lock: its lease alone hands its jobs on.

A worker that abandoned a task itself (a write that failed during a database outage or
restart, so it cannot know whether the task is still its own) gives up the task's lease
as soon as the database answers again (``give_up``): the next pass, on any worker, hands
it on, instead of the lease running out a lease later.
"""

from __future__ import annotations

import random
import threading
import time

import structlog
from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.logs import log_stamp

log = structlog.get_logger("mediaq.rescuer")
DEAD_SESSION_SCAN_S = 1.0  # how often jobs of dead sessions are looked for


def rescue_once(
    pool: ConnectionPool[db.Connection], worker_id: str, max_rescues: int, lease_seconds: int
) -> list[db.Row]:
    """One pass: jobs of dead sessions and expired leases back to the queue (or failed if
    rescued too often), orphaned slots freed, silent workers shown stopped, fallbacks.

    Each its own transaction: the rescue holds job rows, then task rows, until it
    commits; had it then waited for a workers row (a silent worker shown stopped) that a
    heartbeat held while renewing the task rows, the two would deadlock, and a living
    worker could lose its renewal, then its task."""
    with db.transaction(pool) as conn:
        rescued = _rescue(conn, worker_id, max_rescues)
    with db.transaction(pool) as conn:
        db.execute(conn, "slots_release_orphans")
    with db.transaction(pool) as conn:
        db.execute(conn, "workers_mark_lost", {"lease_seconds": lease_seconds})
    with db.transaction(pool) as conn:
        fell_back = fall_back(conn)
    return rescued + fell_back


def rescue_dead(pool: ConnectionPool[db.Connection], worker_id: str,
                max_rescues: int) -> list[db.Row]:
    """The quick pass: only ``jobs_rescue_expired`` (dead sessions, expired leases)."""
    with db.transaction(pool) as conn:
        return _rescue(conn, worker_id, max_rescues)


def _rescue(conn: db.Connection, worker_id: str, max_rescues: int) -> list[db.Row]:
    rescued = db.fetch_all(conn, "jobs_rescue_expired",
                           {"worker_id": worker_id, "max_rescues": max_rescues})
    for row in rescued:
        log.warning("job:rescued", job_id=row["id"], job_code=row["job_code"], status=row["status"])
    return rescued


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
        self._given_up: dict[int, int] = {}  # task id -> attempt, leases to give up
        self._given_up_lock = threading.Lock()

    def give_up(self, task_ids: list[int], attempts: list[int]) -> None:
        """Give up these tasks' leases at the next pass (retried until the database
        answers); fenced by attempt, so a task handed on meanwhile is left alone."""
        with self._given_up_lock:
            self._given_up.update(zip(task_ids, attempts, strict=True))

    def _expire_given_up(self) -> None:
        with self._given_up_lock:
            tasks = dict(self._given_up)
        if not tasks:
            return
        with db.transaction(self.pool) as conn:
            expired = db.fetch_all(conn, "task_leases_give_up", {
                "worker_id": self.worker_id, "task_ids": list(tasks),
                "task_attempts": list(tasks.values())})
        with self._given_up_lock:
            for task_id, attempt in tasks.items():
                if self._given_up.get(task_id) == attempt:
                    del self._given_up[task_id]
        if expired:
            log.info("rescuer:leases_given_up", tasks=[r["id"] for r in expired])

    def run(self) -> None:
        # Every worker rescues; jitter keeps a fleet from all scanning at once.
        interval = max(0.5, self.lease_seconds / 4)
        next_full = time.monotonic() + random.uniform(0.75 * interval, 1.25 * interval)
        while not self.halt.wait(random.uniform(0.75, 1.25) * DEAD_SESSION_SCAN_S):
            try:
                self._expire_given_up()
                if time.monotonic() >= next_full:
                    next_full = time.monotonic() + random.uniform(0.75 * interval,
                                                                  1.25 * interval)
                    found = rescue_once(self.pool, self.worker_id, self.max_rescues,
                                        self.lease_seconds)
                else:
                    found = rescue_dead(self.pool, self.worker_id, self.max_rescues)
                if found:
                    self.wake.set()
            except Exception as exc:
                log.warning("rescuer:error", error=str(exc))
