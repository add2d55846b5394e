"""Storage health: a worker whose roots are missing or unwritable stops claiming.

Without this a worker whose media share is not mounted failed every job it claimed as a
permanent "missing input", and one whose output root could not exist spent each job's
retries on ``NotADirectoryError``. Now the worker checks its input and output roots when
it starts and every ``CHECK_INTERVAL_S``: while one is missing, unreadable (inputs) or
unwritable (outputs), or the output disk has less than ``output_free_floor_mb`` free, it
claims nothing, logs ``worker:storage_unhealthy``, shows the reason in
``workers.claim_problem`` (``mediaq workers``, ``mediaq stats``) and on the jobs that
wait (``waiting_reason``). A missing input on a host whose roots are healthy is still a
permanent error (``mediaq.outputs.check_input``).

Memory-aware admission rides on the same watch: with ``min_free_memory_mb`` the worker
also stops claiming while the host has less memory available, and says so the same way;
so does an operator's pause of the whole host (``mediaq hosts pause``, ``mediaq.hosts``).

The default roots under ``MEDIAQ_HOME`` are created; configured roots never are: a
missing mount point must not turn into a folder on the local disk.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil
import structlog
from psycopg_pool import ConnectionPool

from mediaq import db, hosts
from mediaq.config import Settings, StorageSettings
from mediaq.logs import log_line
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.outcomes import HandedBack

log = structlog.get_logger("mediaq.storage_health")

CHECK_INTERVAL_S = 10.0
MIB = 1024 * 1024

_latest: dict[str, str | None] = {"problem": None}
"""The latest problem this process's watch found (None: healthy, or no watch runs), for
the executor's check before a job's first step."""


def current_problem() -> str | None:
    return _latest["problem"]


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def memory_problem(floor_mb: int) -> str | None:
    """Memory-aware admission: too little memory available on the host to start a job."""
    if floor_mb <= 0:
        return None
    available = psutil.virtual_memory().available
    if available >= floor_mb * MIB:
        return None
    return (f"the host has {available // MIB} MB of memory available, below the floor of "
            f"{floor_mb} MB (min_free_memory_mb)")


def check(storage: StorageSettings) -> str | None:
    """The first problem with this host's storage (one line naming the root), or None."""
    if not storage.input_roots:
        storage.effective_input_roots[0].mkdir(parents=True, exist_ok=True)
    for root in storage.effective_input_roots:
        if not root.is_dir():
            what = "is not a folder" if root.exists() else "is missing (not mounted?)"
            return f"input root {root} {what}"
        if not os.access(root, os.R_OK | os.X_OK):
            return f"input root {root} is not readable by this worker"
    outputs = storage.outputs
    if not isinstance(storage.output_root, Path):  # the default, or the local staging
        # folder of an s3:// output root: ours to create (a configured one never is)
        try:
            outputs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"output root {outputs} cannot be created: {_why(exc)}"
    if not outputs.is_dir():
        what = "is not a folder" if outputs.exists() else "is missing (not mounted?)"
        return f"output root {outputs} {what}"
    try:  # writable in deed, not only by its mode bits (a read-only mount, a full quota)
        storage.staging.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=storage.staging, prefix=".health-"):
            pass
    except OSError as exc:
        return f"output root {outputs} is not writable: {_why(exc)}"
    floor = storage.output_free_floor_mb
    if floor > 0:
        free = shutil.disk_usage(outputs).free
        if free < floor * MIB:
            return (f"output root {outputs} has {free // MIB} MB free, below the floor of "
                    f"{floor} MB (output_free_floor_mb)")
    return None


class StorageWatch(threading.Thread):
    """Checks the storage every ``interval`` in a thread of its own (a hung mount stalls
    this thread, never the producer); ``problem`` is what the producer reads."""

    def __init__(self, pool: ConnectionPool[db.Connection], storage: StorageSettings, *,
                 worker_id: str, host: str, categories: list[str],
                 min_free_memory_mb: int = 0, interval: float = CHECK_INTERVAL_S) -> None:
        super().__init__(name="mediaq-storage", daemon=True)
        self.pool = pool
        self.storage = storage
        self.worker_id = worker_id
        self.host = host
        self.categories = categories
        self.min_free_memory_mb = min_free_memory_mb
        self.interval = interval
        self.halt = threading.Event()
        self._found: str | None = None
        self._checked_at = time.monotonic()
        self.first_check = threading.Event()  # set once the first check has returned
        self._shown: str | None = None  # the waiting reason last written on jobs

    @property
    def problem(self) -> str | None:
        """Why this worker must not claim now, or None."""
        if not self.first_check.is_set():
            return "the storage check has not returned yet (a hung mount?)"
        stalled = time.monotonic() - self._checked_at
        if stalled > 3 * self.interval:
            return (f"the storage check has not returned for {stalled:.0f} s "
                    "(a hung mount?)")
        return self._found

    def check_now(self) -> str | None:
        """Check once and report a change (the thread's first pass runs before the
        worker's first claim)."""
        try:
            found = (check(self.storage) or memory_problem(self.min_free_memory_mb)
                     or self._host_paused())
        except OSError as exc:  # anything the checks above did not foresee
            found = f"storage check failed: {_why(exc)}"
        self._checked_at = time.monotonic()
        self.first_check.set()
        changed = found != self._found
        self._found = found
        _latest["problem"] = found
        if changed:
            if found is None:
                log.info("worker:storage_healthy", worker_id=self.worker_id)
            else:
                log.error("worker:storage_unhealthy", worker_id=self.worker_id,
                          problem=found)
        self._report(found)
        return found

    def _host_paused(self) -> str | None:
        try:
            with self.pool.connection() as conn:
                return hosts.paused_by(conn, self.host)
        except Exception as exc:  # a database outage: claims fail on their own meanwhile
            log.warning("worker:host_pause_unknown", error=str(exc))
            return None

    def _report(self, found: str | None) -> None:
        """Show the problem on the worker row and on the jobs that wait (every pass: new
        jobs arrive); clear what it said once healthy."""
        reason = None if found is None else f"host {self.host} does not claim: {found}"
        try:
            with db.transaction(self.pool) as conn:
                db.execute(conn, "worker_set_claim_problem",
                           {"worker_id": self.worker_id, "problem": found})
                if self._shown is not None and self._shown != reason:
                    db.execute(conn, "jobs_clear_waiting_storage", {"reason": self._shown})
                if reason is not None:
                    db.execute(conn, "jobs_mark_waiting_storage",
                               {"reason": reason, "categories": self.categories})
            self._shown = reason
        except Exception as exc:  # a database outage: the next pass says it again
            log.warning("worker:storage_report_failed", error=str(exc))

    def run(self) -> None:
        while True:
            self.check_now()
            if self.halt.wait(self.interval):
                return


def hand_back_if_unhealthy(handle: JobHandle, settings: Settings, *,
                           fresh: bool = False) -> HandedBack | None:
    """Before a job's first step (``fresh``: after its input was refused, checked anew):
    None when this host's storage is fit, else the job is handed back, no retry spent,
    to wait ``CHECK_INTERVAL_S`` with the reason (another host may take it meanwhile)."""
    problem = check(settings.storage) if fresh else current_problem()
    if problem is None:
        return None
    reason = f"host {settings.worker.host_id} does not claim: {problem}"
    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=CHECK_INTERVAL_S)
    handle.finish("job_hand_back_waiting", until=until, reason=reason,
                  log_line=log_line(f"Handed back: {reason}"))
    log.warning("job:storage_hand_back", job_id=handle.job_id, job_code=handle.job_code,
                problem=problem)
    return HandedBack()
