"""Claiming: one short transaction that takes a machine slot, the VRAM and a task (one
runnable step, or one item of a fanned-out step, of a job).

Lock order is always host row → slot → task → job, so claimers never deadlock with each
other or with the triggers that free slots (which lock job → slot → host, but only
ever wait on the host row, which a claimer holds without waiting on anything).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.logs import log_line
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.maintenance.rescuer import fall_back
from mediaq.worker.resources import GPU_CATEGORIES, Capacity

NO_VRAM_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class ClaimedJob:
    """A claimed task and its job (``id``, ``attempt``: the job's)."""

    id: int
    job_code: str
    attempt: int
    workflow_id: int
    category: str
    vram_required: int
    task_id: int = 0
    task_attempt: int = 0
    step_id: int = 0
    item_index: int | None = None

    def handle(self, pool: ConnectionPool[db.Connection], worker_id: str) -> JobHandle:
        """The fenced handle through which the claiming worker writes about this task."""
        handle = JobHandle(pool, worker_id, self.id, self.job_code, self.attempt,
                           self.category)
        handle.add_task(self.task_id, self.task_attempt, self.step_id, self.item_index)
        return handle


class Claimer:
    def __init__(
        self,
        pool: ConnectionPool[db.Connection],
        *,
        worker_id: str,
        host: str,
        capacity: Capacity,
        queues: list[str] | None,
        lease_seconds: int,
    ) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.host = host
        self.capacity = capacity
        self.queues = queues
        self.lease_seconds = lease_seconds

    def register(self, version: str, *, liveness: bool = False) -> None:
        """Record the worker, its machine and the machine's numbered slots; ``liveness``:
        the worker holds its liveness lock (``worker_liveness_lock``)."""
        cap = self.capacity
        with db.transaction(self.pool) as conn:
            db.execute(conn, "host_ensure",
                       {"host": self.host, "vram_budget_mb": cap.vram_budget_mb})
            for category in cap.categories:
                db.execute(conn, "slots_ensure", {
                    "host": self.host, "category": category,
                    "limit": cap.limits.get(category, 0),
                })
            db.execute(conn, "worker_register", {
                "worker_id": self.worker_id, "host": self.host, "pid": os.getpid(),
                "categories": list(cap.categories), "limits": Jsonb(cap.limits),
                "queues": self.queues, "vram_budget_mb": cap.vram_budget_mb,
                "version": version, "liveness": liveness,
            })
            # Jobs waiting for a GPU no live worker has may run here instead (their
            # workflow says so): decided now, before a burst worker looks for work.
            fall_back(conn)

    def claim(self, category: str, *, prefer_job_id: int | None = None,
              only_preferred: bool = False) -> ClaimedJob | None:
        """Claim the next task of ``category`` this machine has room for, or None; a
        ready task of ``prefer_job_id`` first (run-ahead), or only such a task."""
        params = {"prefer_job_id": prefer_job_id, "only_preferred": only_preferred}
        if category in GPU_CATEGORIES:
            row = self._claim_with_vram(category, params)
        else:  # one statement, its own transaction
            row = db.fetch_one_now(self.pool, "task_claim_next",
                                   {**self._claim_params(category, NO_VRAM_LIMIT), **params})
        if row is None:
            return None
        return ClaimedJob(id=row["id"], job_code=row["job_code"], attempt=row["attempt"],
                          workflow_id=row["workflow_id"], category=category,
                          vram_required=int(row["slot_vram_mb"]),
                          task_id=row["task_id"], task_attempt=row["task_attempt"],
                          step_id=row["step_id"] or 0, item_index=row["item_index"])

    def ready_categories(self, categories: list[str]) -> set[str]:
        """Which of ``categories`` hold a ready task a claim could take now (VRAM aside),
        in one read-only statement: an idle worker's poll, which writes nothing."""
        if not categories:
            return set()
        with self.pool.connection() as conn:
            rows = db.fetch_all(conn, "task_ready_categories",
                                {"categories": categories, "queues": self.queues})
        return {row["category"] for row in rows}

    def _claim_params(self, category: str, vram_free: int) -> dict[str, Any]:
        return {
            "host": self.host, "category": category, "gpu": category in GPU_CATEGORIES,
            "limit": self.capacity.limits.get(category, 0),
            "vram_free_mb": vram_free, "queues": self.queues,
            "worker_id": self.worker_id, "lease_seconds": self.lease_seconds,
            "log_line": log_line(f"Claimed by {self.worker_id} on {self.host}"),
        }

    def _claim_with_vram(self, category: str, extra: dict[str, Any]) -> db.Row | None:
        """A GPU claim: the machine's VRAM ledger locked, read, and charged with the task's
        VRAM in the claim's transaction; only once a read-only look saw a ready task that
        fits the VRAM free (locking the ledger is a write, and the machine's other
        claimers queue behind it)."""
        peek = db.fetch_one_now(self.pool, "task_fits_vram", {
            "host": self.host, "category": category,
            "live_free_mb": self.capacity.live_vram_free_mb(), **extra})
        if peek is None or not peek["fits"]:
            if not extra.get("only_preferred"):
                with self.pool.connection() as conn:  # writes only reasons that change
                    self._explain_waiting(conn, category,
                                          int(peek["vram_free_mb"]) if peek else 0)
            return None
        with db.transaction(self.pool) as conn:
            vram_free = self._vram_free(conn)
            row = db.fetch_one(conn, "task_claim_next",
                               {**self._claim_params(category, vram_free), **extra})
            if row is None:
                if not extra.get("only_preferred"):
                    self._explain_waiting(conn, category, vram_free)
            elif row["slot_vram_mb"]:
                db.execute(conn, "host_reserve_vram", {"host": self.host,
                                                       "vram_mb": row["slot_vram_mb"]})
        return row

    def _vram_free(self, conn: db.Connection) -> int:
        ledger = db.fetch_one(conn, "host_lock", {"host": self.host})
        if ledger is None:
            return 0
        free = int(ledger["vram_budget_mb"]) - int(ledger["vram_reserved_mb"])
        live = self.capacity.live_vram_free_mb()
        return max(0, min(free, live) if live is not None else free)

    def _explain_waiting(self, conn: db.Connection, category: str, vram_free: int) -> None:
        budget = self.capacity.vram_budget_mb
        reason = (
            f"needs more VRAM than is free on {self.host} "
            f"({vram_free} MB free of a {budget} MB budget)"
        )
        db.execute(conn, "jobs_mark_waiting", {
            "category": category, "vram_free_mb": vram_free, "reason": reason,
        })

    def runnable_soon(self, horizon_seconds: float) -> bool:
        with db.transaction(self.pool) as conn:
            row = db.fetch_one(conn, "jobs_runnable_exists", {
                "categories": list(self.capacity.categories), "queues": self.queues,
                "horizon_seconds": horizon_seconds,
                "vram_budget_mb": self.capacity.vram_budget_mb,
            })
        return bool(row and row["runnable"])
