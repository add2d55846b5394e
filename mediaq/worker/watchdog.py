"""Hard step deadlines and stall detection, enforced from outside the media thread.

An action honours its deadline and cancel requests cooperatively (between frames or
chunks); a step stuck in native code (a decoder that never returns) does not, and its
heartbeat kept renewing the job's lease for ever. The watchdog, a thread of its own,
gives every running step a hard deadline: ``timeout_seconds`` (or the job's timeout,
whichever comes first) plus ``step_timeout_grace_seconds``; and, with ``stall_seconds``,
fails a step whose progress has not moved for that long since its last report (a step
that never reports is bounded by its deadline alone). Such a step is **abandoned**:

- its job's stop signal says the attempt is lost, so a step that is merely slow stops at
  its next check and writes nothing;
- the watchdog closes the step's execution as failed and moves the job as the step's
  ``on_failure`` says (retry with back-off, fail, or, for ``continue``, hand the job back
  so that the next attempt goes on after it), with the fence: a step that returned at
  that very moment and committed first wins, and the watchdog writes nothing;
- the worker stops renewing the job's lease and gives its slot back
  (``on_abandoned``), so it goes on claiming. A thread that is still stuck is counted;
  after ``recycle_after_abandoned`` of them the worker stops claiming and exits to be
  restarted (systemd's ``Restart=``), since a thread cannot be killed in process.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import structlog

from mediaq.config import Settings
from mediaq.errors import LeaseLost, StepFailed
from mediaq.worker import completer
from mediaq.worker.breakers import Breakers
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.job_run import Item, JobRun, Step
from mediaq.worker.outcomes import (
    ContinueAfterFailure,
    ErrorClass,
    FusedPassFailed,
    HandedBack,
    StepGaveUp,
    after_failure,
)

log = structlog.get_logger("mediaq.watchdog")

CHECK_INTERVAL_S = 0.25


@dataclass
class _Watch:
    """One running step: its hard deadline (monotonic), when its progress last moved,
    and what to do when either runs out."""

    handle: JobHandle
    hard_deadline: float
    expire: Callable[[str], None]
    fired: bool = False


class Watchdog:
    """Watches the steps of one worker's job threads; started on first use."""

    def __init__(self, grace_seconds: float, stall_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.stall_seconds = stall_seconds
        self.on_abandoned: Callable[[JobHandle], None] | None = None
        """The worker's hook: give the slot of an abandoned job back (its handle)."""
        self._watches: dict[int, _Watch] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, handle: JobHandle, deadline: float | None,
                 expire: Callable[[str], None]) -> Iterator[None]:
        """Watch a step of ``handle``'s job while the block runs: its hard deadline is
        ``deadline`` (monotonic) plus the grace, its progress the job's (a step starts
        as moved). ``expire(why)`` is called from the watchdog's thread if the step must
        be abandoned."""
        hard = (deadline if deadline is not None else float("inf")) + self.grace_seconds
        # NaN: no report yet in this step. The stall clock starts at its first report,
        # so an action that never reports is bounded by its deadline alone.
        handle.progress_percent, handle.progress_moved_at = math.nan, time.monotonic()
        watch = _Watch(handle=handle, hard_deadline=hard, expire=expire)
        key = next(self._ids)
        with self._lock:
            self._watches[key] = watch
            self._ensure_thread()
        try:
            yield
        finally:
            with self._lock:
                self._watches.pop(key, None)

    def _ensure_thread(self) -> None:
        """Start the watching thread unless it runs (called with the lock held)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="mediaq-watchdog",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(CHECK_INTERVAL_S)
            now = time.monotonic()
            with self._lock:
                if not self._watches:  # nothing runs: the next step starts a new thread
                    self._thread = None
                    return
                due = [(key, watch, why) for key, watch in self._watches.items()
                       if not watch.fired and (why := self._overdue(watch, now))]
                for key, watch, _ in due:
                    watch.fired = True
                    self._watches.pop(key, None)
            for _, watch, why in due:
                self._abandon(watch, why)

    def _overdue(self, watch: _Watch, now: float) -> str | None:
        if now >= watch.hard_deadline:
            return (f"no result {self.grace_seconds:g} s after its deadline; the step was "
                    "abandoned (stuck, e.g. in native code)")
        handle = watch.handle
        if self.stall_seconds > 0 and not math.isnan(handle.progress_percent) \
                and now - handle.progress_moved_at >= self.stall_seconds:
            return (f"its progress has not moved for {self.stall_seconds:g} s "
                    "(stall_seconds); the step was abandoned")
        return None

    @staticmethod
    def _abandon(watch: _Watch, why: str) -> None:
        # A cooperative step stops at its next check and writes nothing (the attempt is
        # no longer its own); then the outcome is written from here.
        watch.handle.stop_signal.stop(LeaseLost(f"step abandoned: {why}"))
        try:
            watch.expire(why)
        except Exception as exc:  # the job moved on meanwhile (fenced), or an outage
            log.warning("watchdog:abandon_not_written", error=str(exc) or repr(exc))


def abandon_step(breakers: Breakers, settings: Settings, watchdog: Watchdog, handle: JobHandle,
                 run: JobRun, step: Step, execution_id: int, item: Item, why: str,
                 also_close: tuple[tuple[Step, int], ...] = ()) -> None:
    """Write what an abandoned step comes to, from the watchdog's thread: its execution
    fails (transient; permanent once the job's own timeout has passed) and the job moves
    as ``on_failure`` says; for ``continue`` the job is handed back, since the thread that
    would go on is the stuck one. Fenced: a step that committed first wins.
    ``also_close``: the other steps of a one-pass run, closed as 'fused' first."""
    past_job = time.monotonic() >= run.job_deadline
    failure = StepFailed(ErrorClass.PERMANENT if past_job else ErrorClass.TRANSIENT,
                         f"{why}" if not past_job else
                         f"job timed out after {run.context['timeout_minutes']} min: {why}")
    outcome = after_failure(
        failure, step, retries_used=int(run.context["retry_count"] or 0),
        max_retries=int(run.context["max_retries"] or 0),
        retry_base_seconds=settings.worker.retry_base_seconds,
        retry_max_seconds=settings.worker.retry_max_seconds)
    log.warning("step:abandoned", job_id=handle.job_id, job_code=handle.job_code,
                step=step.number, action=step.action, why=why)
    try:
        for other, other_execution in also_close:
            completer.close_step(handle, other_execution, other,
                                 FusedPassFailed(f"step {step.number}: {why}"),
                                 run.percent(other, done=False))
        completer.close_step(handle, execution_id, step, outcome,
                             run.percent(step, done=outcome.advances, item=item))
        match outcome:
            case StepGaveUp(job=failed):
                completer.finish(handle, failed)
            case ContinueAfterFailure():
                completer.finish(handle, HandedBack())
            case _:
                pass  # a retry: written with the step's close
    finally:
        if watchdog.on_abandoned is not None:
            watchdog.on_abandoned(handle)
    if failure.error_class == ErrorClass.TRANSIENT:
        breakers.failed(handle, step.action, failure.message)
