"""Every write a worker makes about one claimed task of a job, each fenced by the task:
(task id, task attempt, worker), the task running and its job processing (a fused pass
holds several sibling tasks; owning any of them is enough for the job-wide writes).

Every parameter goes through ``mediaq.storable.storable`` on its way: text from media
files (a PDF title, a tag) may hold a NUL, which no JSONB or text column can store.

A fenced statement that touches no row means another worker owns the task now (or the
job ended meanwhile):
the handle raises LeaseLost and the executor stops without writing anything else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.errors import LeaseLost
from mediaq.logs import log_line
from mediaq.storable import storable
from mediaq.worker.publications import CLAIM_S, Publication

PROGRESS_INTERVAL_S = 0.5


class StopSignal(threading.Event):
    """A cancel event that remembers why (Cancelled, Paused or LeaseLost)."""

    reason: BaseException | None = None

    def stop(self, reason: BaseException) -> None:
        if not self.is_set():
            self.reason = reason
            self.set()


@dataclass(frozen=True)
class Settle:
    """How a step's commit settles its task: the task's new state (completed, skipped or
    failed under on_failure continue), and how to build the job's completion when no
    other task of the job is left (the statement and its parameters, less the fence)."""

    task_id: int
    state: str
    completion: Callable[[db.Connection], tuple[str, dict[str, Any]]]


@dataclass
class JobHandle:
    pool: ConnectionPool[db.Connection]
    worker_id: str
    job_id: int
    job_code: str
    attempt: int  # the job's attempt (staging folders, step_executions.job_attempt)
    category: str
    # The tasks this handle runs (one, or a fused pass's siblings), with their attempts,
    # and by (step id, item index).
    task_ids: list[int] = field(default_factory=list)
    task_attempts: list[int] = field(default_factory=list)
    tasks: dict[tuple[int, int | None], int] = field(default_factory=dict)
    # Set by the commit that ended the job (the last task's): its completion.
    ended_job: Any = None
    # What the executor loaded for the job (a JobRun), kept for run-ahead.
    run_cache: Any = None
    stop_signal: StopSignal = field(default_factory=StopSignal)
    # A committed step's outputs this worker could not publish after its commit: the
    # job's next task here publishes them first (mediaq.worker.publications).
    publications_left: bool = False
    # Set by a commit with outputs that would have completed the job: the job completes
    # once they are published (settle_alone), so a job is never seen completed before
    # its outputs are in place, unless publishing them failed.
    settle_after_publication: Settle | None = None
    _last_progress: float = 0.0
    progress_percent: float = -1.0
    progress_moved_at: float = field(default_factory=time.monotonic)

    @property
    def fence(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "worker_id": self.worker_id, "attempt": self.attempt,
                "task_ids": self.task_ids, "task_attempts": self.task_attempts,
                # job_complete settles one task as told (task_id, task_state), the
                # others it still runs as completed
                "task_id": None, "task_state": None}

    def continue_with(self, task_id: int, attempt: int, step_id: int,
                      item_index: int | None, job_attempt: int) -> None:
        """Run-ahead: the same worker goes on with the job's next task (claimed)."""
        self.task_ids.clear()
        self.task_attempts.clear()
        self.tasks.clear()
        self.add_task(task_id, attempt, step_id, item_index)
        self.attempt = job_attempt
        self.ended_job = None
        self.stop_signal = StopSignal()
        self.settle_after_publication = None
        self._last_progress, self.progress_percent = 0.0, -1.0
        self.progress_moved_at = time.monotonic()

    def add_task(self, task_id: int, attempt: int, step_id: int, item_index: int | None) -> None:
        self.task_ids.append(task_id)
        self.task_attempts.append(attempt)
        self.tasks[(step_id, item_index)] = task_id

    def _lost(self) -> LeaseLost:
        error = LeaseLost(
            f"{self.job_code}: tasks {self.task_ids} are no longer owned by {self.worker_id}")
        self.stop_signal.stop(error)
        return error

    def _fenced(self, name: str, **params: Any) -> db.Row:
        row = db.fetch_one_now(self.pool, name, storable({**self.fence, **params}))
        if row is None:
            raise self._lost()
        return row

    def record_input_bytes(self, size: int) -> None:
        self._fenced("job_input_bytes", input_bytes=size)

    def log(self, message: str) -> None:
        self._fenced("job_append_log", log_line=log_line(message))

    def start_step(
        self, *, step_id: int, step_number: int, step_name: str, retry_attempt: int,
        progress_percent: float, input_data: dict[str, Any], item_index: int | None = None,
        item_label: str = "",
    ) -> int:
        row = self._fenced(
            "step_start",
            step_id=step_id, step_number=step_number, step_name=step_name,
            retry_attempt=retry_attempt, progress_percent=progress_percent,
            input_data=Jsonb(input_data), item_index=item_index,
            log_line=log_line(f"Step {step_number} '{step_name}'{item_label} started"
                              + (f" (attempt {retry_attempt + 1})" if retry_attempt else "")),
        )
        return int(row["id"])

    def skip_step(self, *, step_id: int, step_number: int, step_name: str, reason: str,
                  progress_percent: float, input_data: dict[str, Any]) -> None:
        """Record a step whose condition was false as skipped, with the reason."""
        self._fenced(
            "step_skip", step_id=step_id, progress_percent=round(progress_percent, 2),
            input_data=Jsonb(input_data), output_data=Jsonb({"skipped": reason}),
            log_line=log_line(f"Step {step_number} '{step_name}' skipped: {reason}"))

    def progress(self, percent: float, stage: str | None, *, force: bool = False,
                 fraction: float | None = None) -> None:
        """Write progress at most every half second (and always when ``force``).
        ``fraction``: how far the running task is (0-1); the job's figure is then
        weighted over its tasks in the database (siblings run elsewhere), ``percent``
        only shown where there is none (downloading the input)."""
        now = time.monotonic()
        if percent != self.progress_percent:  # the watchdog's stall detector reads these
            self.progress_percent, self.progress_moved_at = percent, now
        if not force and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        self._fenced("job_progress", progress_percent=round(percent, 2), stage=stage,
                     fraction=fraction)

    def commit_step(
        self,
        execution_id: int,
        *,
        status: str,
        output_data: dict[str, Any] | None = None,
        error_message: str | None = None,
        error_class: str | None = None,
        publications: Sequence[Publication] = (),
        log_message: str,
        progress_percent: float,
        then: tuple[str, dict[str, Any]] | None = None,
        settle: Settle | None = None,
    ) -> list[int]:
        """Close a step and (optionally) move the job on, in one transaction, which
        records the step's ``publications`` too; their ids, in order.

        Nothing is published here: the caller moves the files after the COMMIT
        (``mediaq.worker.publications``), so a file at a final location always belongs
        to a committed step, a worker that lost the job publishes nothing, and no copy
        holds the job row's lock.
        """
        ids: list[int] = []
        with db.transaction(self.pool) as conn:
            locked = db.fetch_one(conn, "job_step_committed", storable({
                **self.fence, "log_line": log_line(log_message),
                "progress_percent": round(progress_percent, 2), "done": status == "completed",
            }))
            if locked is None:
                raise self._lost()
            db.execute(conn, "step_finish", storable({
                "execution_id": execution_id,
                "status": status,
                "output_data": Jsonb(output_data) if output_data is not None else None,
                "error_message": error_message,
                "error_class": error_class,
            }))
            if settle is not None:
                then = self._settle(conn, settle, defer_completion=bool(publications))
            if then is not None:
                name, params = then
                if db.fetch_one(conn, name, storable({**self.fence, **params})) is None:
                    raise self._lost()
            if publications:
                rows = db.fetch_all(conn, "publications_record", storable({
                    "job_id": self.job_id, "execution_id": execution_id,
                    "job_attempt": self.attempt, "worker_id": self.worker_id,
                    "claim_seconds": CLAIM_S,
                    "staged": [p.staged for p in publications],
                    "final": [p.final for p in publications],
                    "size_bytes": [p.size_bytes for p in publications],
                    "sha256": [p.sha256 for p in publications]}))
                ids = [int(row["id"]) for row in rows]
        return ids

    def _settle(self, conn: db.Connection, settle: Settle, *,
                defer_completion: bool = False) -> tuple[str, dict[str, Any]] | None:
        """Settle a task in its step's commit (the job row is locked): the job's
        completion when no other task is left, else the task is done and its dependents
        count one need less. ``defer_completion``: the job's completion waits for
        ``settle_after_publication`` (the task stays running, under its lease)."""
        left = db.fetch_one(conn, "task_remaining", {"job_id": self.job_id,
                                                     "task_id": settle.task_id})
        if left is not None and int(left["remaining"]) == 0:
            if defer_completion:
                self.settle_after_publication = settle
                return None
            name, params = settle.completion(conn)
            return name, {**params, "task_id": settle.task_id, "task_state": settle.state}
        if db.fetch_one(conn, "task_done", {**self.fence, "task_id": settle.task_id,
                                            "state": settle.state}) is None:
            raise self._lost()
        return None

    def settle_alone(self, settle: Settle, log_message: str) -> None:
        """Settle a task outside a step's commit (an earlier attempt finished its step)."""
        with db.transaction(self.pool) as conn:
            if db.fetch_one(conn, "job_lock_owned", self.fence) is None:
                raise self._lost()
            then = self._settle(conn, settle)
            if then is not None:
                name, params = then
                if db.fetch_one(conn, name, storable({**self.fence, **params})) is None:
                    raise self._lost()
            db.execute(conn, "job_append_log", {**self.fence,
                                                "log_line": log_line(log_message)})

    def expand(self, task_id: int, items: list[dict[str, Any]], log_message: str) -> None:
        """A fan-out's task makes one ready task per item (the job row locked)."""
        with db.transaction(self.pool) as conn:
            if db.fetch_one(conn, "job_lock_owned", self.fence) is None:
                raise self._lost()
            db.execute(conn, "job_append_log", {**self.fence, "log_line": log_line(log_message)})
            if db.fetch_one(conn, "task_expand", storable({
                    **self.fence, "task_id": task_id, "count": len(items),
                    "items": Jsonb(items)})) is None:
                raise self._lost()

    def claim_siblings(self, step_numbers: list[int], group_numbers: list[int],
                       lease_seconds: int) -> list[db.Row]:
        """Claim the job's tasks of these sibling steps of a pass (``group_numbers``) for
        one fused pass: ready ones, and waiting ones that wait only for the pass's own
        steps (a chain); none when another worker of the category is idle (spread)."""
        with db.transaction(self.pool) as conn:
            return db.fetch_all(conn, "task_claim_siblings", {
                **self.fence, "step_numbers": step_numbers, "group_numbers": group_numbers,
                "category": self.category, "lease_seconds": lease_seconds})

    def finish(self, name: str, **params: Any) -> db.Row:
        """A job-level transition outside a step (complete, fail, hand back…); which
        statement records which outcome is ``mediaq.worker.completer``'s to say. The job
        row is locked first, so sibling tasks ending at once see each other's ends."""
        with db.transaction(self.pool) as conn:
            if db.fetch_one(conn, "job_lock_owned", self.fence) is None:
                raise self._lost()
            row = db.fetch_one(conn, name, storable({**self.fence, **params}))
        if row is None:
            raise self._lost()
        return row
