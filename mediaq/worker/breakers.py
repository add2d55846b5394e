"""Circuit breakers on actions: a broken encoder or a dependency outage stops burning
every job's retries.

When an action fails transiently ``action_breaker_threshold`` times within
``action_breaker_window_seconds`` on one host, that host's breaker of the action opens
(the action-wide one, host '', when the failures come from two hosts or more). A job
whose next step runs an action with an open breaker is handed back before the step
starts: no retry spent, ``retry_after`` = the breaker's reopen time and a
``waiting_reason`` that says which breaker and until when. Once the cool-down is over
one job runs the step as the probe (half-open); its success closes the breaker and
releases the jobs that wait for it, its transient failure opens it again.

The state is the table ``action_breakers`` (shared by every worker and host); operators
list and close breakers with ``mediaq breakers``, the API and ``/metrics``
(``mediaq.breakers``).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import structlog

from mediaq import db
from mediaq.breakers import close, reason_prefix
from mediaq.config import Settings
from mediaq.logs import log_line
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.outcomes import HandedBack

log = structlog.get_logger("mediaq.breakers")

CACHE_SECONDS = 1.0

@dataclass(frozen=True)
class Blocked:
    """A breaker that stops a step now: which, until when, and what to tell operators."""

    action: str
    host: str
    until: dt.datetime
    reason: str


def waiting_reason(action: str, host: str, state: str, failures: int, until: dt.datetime,
                   last_error: str | None) -> str:
    where = f"on {host}" if host else "on every host"
    if state == "half_open":
        why = "half-open: a probe runs"
    else:
        why = f"open after {failures} transient failure(s)"
        if last_error:
            why += f", last: {last_error[:160]}"
    return (f"{reason_prefix(action)} {where} is {why}; waiting until "
            f"{until.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")


class Breakers:
    """The executor's view of the action breakers (one per worker, thread-safe: every
    call takes a pooled connection of the job's own)."""

    def __init__(self, settings: Settings) -> None:
        worker = settings.worker
        self.host = worker.host_id
        self.threshold = worker.action_breaker_threshold
        self.window_seconds = worker.action_breaker_window_seconds
        self.cooldown_seconds = worker.action_breaker_cooldown_seconds
        # (job, action) whose step found a breaker not closed before it ran: only their
        # success has something to close, so the usual step costs one look-up, not two.
        self._saw_breaker: set[tuple[int, str]] = set()
        # action -> until when (monotonic) "no breaker stands before it" is taken as known:
        # a busy worker looks each action up once a second, not once a step. A breaker
        # another worker opens is seen within that second (steps already running race
        # it anyway); one this worker opens clears the cache at once.
        self._clear_until: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    def admit(self, handle: JobHandle, action: str) -> HandedBack | None:
        """Before a step of ``action`` starts: None to run it (no breaker stands before it,
        or this job is the probe), else the job is handed back to wait (written here)."""
        if not self.enabled:
            return None
        blocked = self._check(handle, action)
        if blocked is None:
            return None
        handle.finish("job_hand_back_waiting", until=blocked.until, reason=blocked.reason,
                      log_line=log_line(f"Waiting: {blocked.reason}"))
        log.info("breaker:job_waits", job_id=handle.job_id, job_code=handle.job_code,
                 action=action, host=blocked.host or None, until=blocked.until.isoformat())
        return HandedBack()

    def _check(self, handle: JobHandle, action: str) -> Blocked | None:
        if time.monotonic() < self._clear_until.get(action, 0.0):
            return None
        with db.transaction(handle.pool) as conn:
            rows = db.fetch_all(conn, "breakers_blocking", {"action": action,
                                                             "host": self.host})
            if not rows:  # the usual case: one indexed look-up, nothing locked
                self._clear_until[action] = time.monotonic() + CACHE_SECONDS
                return None
            self._saw_breaker.add((handle.job_id, action))
            waiting = [r for r in rows if not r["due"]
                       and not (r["state"] == "half_open" and r["probe_job_id"] == handle.job_id)]
            if waiting:
                latest = max(waiting, key=lambda r: r["reopen_at"])
                return Blocked(action, latest["host"], latest["reopen_at"], waiting_reason(
                    action, latest["host"], latest["state"], int(latest["failures"]),
                    latest["reopen_at"], latest["last_error"]))
            for row in rows:
                if row["due"]:
                    # The cool-down is over: this job probes. Until the probe reports (or
                    # its window of one cool-down ends), the others wait.
                    db.execute(conn, "breaker_take_probe", {
                        "action": action, "host": row["host"], "job_id": handle.job_id,
                        "probe_seconds": self.cooldown_seconds})
                    log.info("breaker:probe", action=action, host=row["host"] or None,
                             job_id=handle.job_id, job_code=handle.job_code)
            handle.log(f"Probing the circuit breaker of action '{action}'")
        return None

    def failed(self, handle: JobHandle, action: str, error: str) -> None:
        """A step of ``action`` failed transiently: count it; open what reached the
        threshold (or re-open a half-open breaker whose probe failed)."""
        if not self.enabled:
            return
        self._saw_breaker.discard((handle.job_id, action))
        with db.transaction(handle.pool) as conn:
            db.execute(conn, "breaker_record_failure", {
                "action": action, "host": self.host, "error": error[:500],
                "window_seconds": self.window_seconds})
            opened = db.fetch_all(conn, "breakers_trip", {
                "action": action, "host": self.host, "threshold": self.threshold,
                "cooldown_seconds": self.cooldown_seconds})
        if opened:
            self._clear_until.pop(action, None)
        for row in opened:
            log.warning("breaker:opened", action=action, host=row["host"] or None,
                        failures=row["failures"], until=row["reopen_at"].isoformat(),
                        error=error)

    def succeeded(self, handle: JobHandle, action: str) -> None:
        """A step of ``action`` succeeded here after it found a breaker open or half-open
        (it was the probe, or an operator or another host closed it meanwhile): the
        breakers close and the jobs that waited for them may start."""
        if not self.enabled or (handle.job_id, action) not in self._saw_breaker:
            return
        self._saw_breaker.discard((handle.job_id, action))
        with db.transaction(handle.pool) as conn:
            closed = close(conn, action, self.host)
        for row in closed:
            log.info("breaker:closed", action=action, host=row["host"] or None,
                     job_code=handle.job_code)

