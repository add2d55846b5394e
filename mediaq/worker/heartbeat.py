"""Leases and operator requests, kept by a thread apart from the media work.

Every second it reads cancel/pause flags of the jobs this worker runs; every third
of a lease it renews the leases (again within a fraction of a second when a renewal
failed or met a task row another transaction held). A job this worker no longer owns is
told to stop.
With each renewal it reports what the machine has left (disk free on the storage roots,
its RSS, the load: ``mediaq.host_stats``), which ``/metrics`` shows.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import structlog
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.errors import Cancelled, LeaseLost, Paused
from mediaq.host_stats import snapshot
from mediaq.worker.job_handle import JobHandle

log = structlog.get_logger("mediaq.heartbeat")
CONTROL_INTERVAL_S = 1.0
RENEW_RETRY_S = 0.2  # a renewal that failed or met a busy task row is tried again this soon
RESOURCES_INTERVAL_S = 15.0  # how often disk free, RSS and load are measured


class Heartbeat(threading.Thread):
    def __init__(
        self, pool: ConnectionPool[db.Connection], worker_id: str, lease_seconds: int,
        running: dict[int, JobHandle], running_lock: threading.Lock,
        roots: list[tuple[str, Path]] | None = None,
    ) -> None:
        super().__init__(name="mediaq-heartbeat", daemon=True)
        self.pool = pool
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.running = running
        self.running_lock = running_lock
        self.halt = threading.Event()
        self.status = "running"
        self.roots = roots or []
        # The latest resource snapshot and when it was taken (monotonic), written by a
        # thread of its own: a hung network mount stalls that thread, never the leases.
        self.resources: tuple[float, dict[str, Any]] | None = None

    def run(self) -> None:
        threading.Thread(target=self._measure, name="mediaq-resources", daemon=True).start()
        renew_every = max(0.5, self.lease_seconds / 3)
        next_renew = next_control = 0.0
        retry = RENEW_RETRY_S
        while not self.halt.is_set():
            handles = self._snapshot()
            if time.monotonic() >= next_control:
                next_control = time.monotonic() + CONTROL_INTERVAL_S
                try:
                    if handles:
                        self._apply_control_flags(handles)
                except Exception as exc:  # a database outage: keep trying, leases decide
                    log.warning("heartbeat:error", error=str(exc))
            if time.monotonic() >= next_renew:
                try:
                    complete = self._renew(handles)
                except Exception as exc:  # an outage, a connection ended: try again soon
                    log.warning("heartbeat:renew_failed", error=str(exc))
                    complete = False
                # A renewal that failed, or skipped a task row another transaction held,
                # is tried again within a fraction of a second (backing off towards the
                # usual pace while it keeps failing), not a third of a lease later: one
                # miss must not cost the lease.
                if complete:
                    retry = RENEW_RETRY_S
                    next_renew = time.monotonic() + renew_every
                else:
                    next_renew = time.monotonic() + retry
                    retry = min(2 * retry, renew_every)
            self.halt.wait(max(0.0, min(next_control, next_renew) - time.monotonic()))

    def _measure(self) -> None:
        while not self.halt.is_set():
            try:
                self.resources = (time.monotonic(), snapshot(self.roots))
            except Exception as exc:  # figures are a nicety: the lease is what matters
                log.warning("heartbeat:resources", error=str(exc))
            self.halt.wait(RESOURCES_INTERVAL_S)

    def _latest_resources(self) -> Jsonb | None:
        """The latest snapshot, unless measuring has stalled (then nothing is reported,
        and /metrics drops this worker's figures rather than show stale ones)."""
        latest = self.resources
        if latest is None or time.monotonic() - latest[0] > 3 * RESOURCES_INTERVAL_S:
            return None
        return Jsonb(latest[1])

    def _snapshot(self) -> list[JobHandle]:
        with self.running_lock:
            return list(self.running.values())

    @staticmethod
    def _ids(handles: list[JobHandle]) -> dict[str, list[int]]:
        """Every task the handles run (a fused pass holds several), with its attempt."""
        pairs = [(t, a) for h in handles for t, a in zip(list(h.task_ids),
                                                           list(h.task_attempts), strict=False)]
        return {"task_ids": [t for t, _ in pairs], "task_attempts": [a for _, a in pairs]}

    def _apply_control_flags(self, handles: list[JobHandle]) -> None:
        with db.transaction(self.pool) as conn:
            rows = db.fetch_all(conn, "jobs_control_flags",
                                {"worker_id": self.worker_id, **self._ids(handles)})
        # A handle is lost when none of its tasks is still its own (a fused pass's
        # committed siblings are no longer running, the others are).
        by_task = {t: h for h in handles for t in list(h.task_ids)}
        asked = {id(h): list(h.task_ids) for h in handles}
        owned: dict[int, bool] = {}
        for row in rows:
            handle = by_task.get(row["task_id"])
            if handle is None:
                continue
            owned[id(handle)] = owned.get(id(handle), False) or bool(row["owned"])
            if row["cancel_requested"]:
                handle.stop_signal.stop(Cancelled())
            elif row["pause_requested"]:
                handle.stop_signal.stop(Paused())
        for handle in handles:
            # Not when the handle went on to another task meanwhile (run-ahead).
            if owned.get(id(handle)) is False and handle.task_ids == asked[id(handle)]:
                handle.stop_signal.stop(LeaseLost(f"{handle.job_code} is owned elsewhere now"))

    def _renew(self, handles: list[JobHandle]) -> bool:
        """Renew the leases of the tasks the handles run, then show the worker alive;
        whether every task still owned had its lease extended. Each statement is its own
        transaction (the pool's connections are in autocommit), so the heartbeat never
        holds one kind of row (a task, a job, its workers row) while it waits for another:
        it cannot take part in a lock cycle with commits and rescuers, which lock a job,
        then its tasks, then (a rescuer) workers rows."""
        rows: list[db.Row] = []
        if handles:
            asked = {id(h): list(h.task_ids) for h in handles}
            with self.pool.connection() as conn:
                rows = db.fetch_all(conn, "leases_renew", {
                    "worker_id": self.worker_id, "lease_seconds": self.lease_seconds,
                    **self._ids(handles),
                })
            owned = {r["id"] for r in rows}
            for handle in handles:
                mine = asked[id(handle)]
                if not owned.intersection(mine) and handle.task_ids == mine:
                    handle.stop_signal.stop(LeaseLost(f"lease of {handle.job_code} was lost"))
        with self.pool.connection() as conn:
            db.execute(conn, "worker_heartbeat", {"worker_id": self.worker_id,
                                                  "status": self.status,
                                                  "resources": self._latest_resources()})
        renewed = sorted({r["job_id"] for r in rows if r["renewed"]})
        if renewed:
            with self.pool.connection() as conn:
                db.execute(conn, "job_leases_renew", {"lease_seconds": self.lease_seconds,
                                                      "job_ids": renewed})
        return all(r["renewed"] for r in rows)
