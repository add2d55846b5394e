"""Every write a worker makes about one claimed job, each fenced by (worker, attempt).

Every parameter goes through ``mediaq.storable.storable`` on its way: text from media
files (a PDF title, a tag) may hold a NUL, which no JSONB or text column can store.

A fenced statement that touches no row means another worker owns the job now:
the handle raises LeaseLost and the executor stops without writing anything else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.errors import LeaseLost
from mediaq.logs import log_line
from mediaq.outputs import publish
from mediaq.storable import storable

PROGRESS_INTERVAL_S = 0.5


class StopSignal(threading.Event):
    """A cancel event that remembers why (Cancelled, Paused or LeaseLost)."""

    reason: BaseException | None = None

    def stop(self, reason: BaseException) -> None:
        if not self.is_set():
            self.reason = reason
            self.set()


@dataclass
class JobHandle:
    pool: ConnectionPool[db.Connection]
    worker_id: str
    job_id: int
    job_code: str
    attempt: int
    category: str
    stop_signal: StopSignal = field(default_factory=StopSignal)
    # Set by the executor before a step's commit when its outputs go to object storage:
    # copies the attempt's uploaded objects to their final keys (mediaq.storage.remote),
    # run while the job row is locked, like the renames below.
    finalize_remote: Callable[[], object] | None = None
    _last_progress: float = 0.0
    progress_percent: float = -1.0
    progress_moved_at: float = field(default_factory=time.monotonic)

    @property
    def fence(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "worker_id": self.worker_id, "attempt": self.attempt}

    def _lost(self) -> LeaseLost:
        error = LeaseLost(
            f"{self.job_code}: attempt {self.attempt} is no longer owned by {self.worker_id}")
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

    def progress(self, percent: float, stage: str | None, *, force: bool = False) -> None:
        """Write progress at most every half second (and always when ``force``)."""
        now = time.monotonic()
        if percent != self.progress_percent:  # the watchdog's stall detector reads these
            self.progress_percent, self.progress_moved_at = percent, now
        if not force and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        self._fenced("job_progress", progress_percent=round(percent, 2), stage=stage)

    def commit_step(
        self,
        execution_id: int,
        *,
        status: str,
        output_data: dict[str, Any] | None = None,
        error_message: str | None = None,
        error_class: str | None = None,
        staged_files: list[Path] | None = None,
        output_dir: Path | None = None,
        log_message: str,
        progress_percent: float,
        then: tuple[str, dict[str, Any]] | None = None,
    ) -> list[Path]:
        """Close a step and (optionally) move the job on, in one transaction.

        The job row stays locked while staged outputs are renamed into place, so a
        rescuer cannot hand the job to someone else half-way, and a worker that lost
        the job publishes nothing.
        """
        published: list[Path] = []
        with db.transaction(self.pool) as conn:
            locked = db.fetch_one(conn, "job_step_committed", storable({
                **self.fence, "log_line": log_line(log_message),
                "progress_percent": round(progress_percent, 2),
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
            if then is not None:
                name, params = then
                if db.fetch_one(conn, name, storable({**self.fence, **params})) is None:
                    raise self._lost()
            # Last, once every statement is accepted: a result the database refuses
            # (``outcomes.unstorable_reason``) leaves nothing published.
            if self.finalize_remote is not None and staged_files:
                self.finalize_remote()  # raises a storage error: the commit rolls back
            for staged in staged_files or []:
                assert output_dir is not None
                published.append(publish(staged, output_dir))
        return published

    def finish(self, name: str, **params: Any) -> db.Row:
        """A job-level transition outside a step (complete, fail, hand back…); which
        statement records which outcome is ``mediaq.worker.completer``'s to say."""
        return self._fenced(name, **params)
