"""``mediaq worker --autoscale MIN:MAX``: worker processes on this machine that follow
the queue.

The supervisor starts and stops ``mediaq worker`` processes that run one job each.
It scales up at once when eligible jobs wait (up to MAX, and never past the
machine's category limits, which the claim enforces anyway), scales down one
process at a time after a quiet period by SIGTERM (the process finishes its job
and exits: a drain, never a kill), and replaces a process that dies. The first
process also runs the notifier and the triggers; the others only run jobs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil
import structlog

from mediaq import db
from mediaq.config import Settings

log = structlog.get_logger("mediaq.autoscale")

TICK_S = 1.0
STOP_STEP_S = 2.0  # between two scale-down steps once the quiet period is over
MIN_FREE_MEMORY_MB = 256  # no new process below this much available memory


@dataclass(frozen=True)
class ScalePolicy:
    minimum: int
    maximum: int
    quiet_s: float = 15.0  # no waiting work this long before a process is drained


def parse_range(text: str) -> ScalePolicy:
    """``"1:6"`` → ScalePolicy(1, 6)."""
    low, sep, high = text.partition(":")
    try:
        policy = ScalePolicy(int(low), int(high if sep else low))
    except ValueError:
        raise ValueError(f"--autoscale {text!r}: MIN:MAX expected, e.g. 1:6") from None
    if not 1 <= policy.minimum <= policy.maximum:
        raise ValueError(f"--autoscale {text!r}: need 1 <= MIN <= MAX")
    return policy


def desired_processes(policy: ScalePolicy, running: int, waiting: int, machine_limit: int,
                      current: int, memory_ok: bool) -> int:
    """How many one-job processes the work calls for, within the policy and the limits."""
    wanted = min(running + waiting, machine_limit, policy.maximum)
    if not memory_ok:
        wanted = min(wanted, current)  # do not grow into swapping
    return max(policy.minimum, wanted)


def workers_for(depth: Sequence[Mapping[str, Any]], categories: tuple[str, ...],
                jobs_per_worker: int, policy: ScalePolicy) -> int:
    """How many worker instances an external autoscaler should run for the queue_depth
    rows of ``categories``: enough for the running and eligible jobs, within the policy."""
    work = sum(int(row["running"]) + int(row["eligible"]) for row in depth
               if row["resource_category"] in categories)
    return max(policy.minimum, min(policy.maximum, -(-work // jobs_per_worker)))


@dataclass
class Child:
    number: int
    process: subprocess.Popen[bytes]
    draining: bool = False


@dataclass
class Supervisor:
    settings: Settings
    url: str
    policy: ScalePolicy
    worker_args: list[str]  # categories, limits, queues… passed to every process
    categories: tuple[str, ...]
    queues: list[str] | None
    machine_limit: int
    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    restarts: int = 0

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; the number of processes restarted."""
        log.info("autoscale:started", minimum=self.policy.minimum, maximum=self.policy.maximum)
        quiet_since = time.monotonic()
        try:
            with db.connect(self.url, autocommit=True, application="mediaq-autoscale") as conn:
                while not self.stopping.is_set():
                    self._replace_dead()
                    demand = db.fetch_one(conn, "autoscale_demand", {
                        "categories": list(self.categories), "queues": self.queues,
                        "host": self.settings.worker.host_id})
                    assert demand is not None
                    quiet_since = self._scale(demand["running"], demand["waiting"],
                                              quiet_since)
                    self.stopping.wait(TICK_S)
        finally:
            self._stop_all()
        return self.restarts

    def stop(self) -> None:
        self.stopping.set()

    def _live(self) -> list[Child]:
        return [c for c in self.children if c.process.poll() is None and not c.draining]

    def _scale(self, running: int, waiting: int, quiet_since: float) -> float:
        live = self._live()
        memory_ok = psutil.virtual_memory().available >= MIN_FREE_MEMORY_MB * 1024 * 1024
        wanted = desired_processes(self.policy, running, waiting, self.machine_limit,
                                   len(live), memory_ok)
        now = time.monotonic()
        if waiting > 0:
            quiet_since = now
        if wanted > len(live):
            for _ in range(wanted - len(live)):
                self._start()
        elif wanted < len(live) and now - quiet_since >= self.policy.quiet_s:
            self._drain(live[-1])
            quiet_since = now - self.policy.quiet_s + STOP_STEP_S
        return quiet_since

    def _start(self) -> None:
        taken = {c.number for c in self.children if c.process.poll() is None}
        number = next(n for n in range(1, len(self.children) + 2) if n not in taken)
        extra = [] if number == 1 else ["--no-notifier", "--no-triggers"]
        process = subprocess.Popen(  # each picks its own worker id: host:pid:random
            [sys.executable, "-m", "mediaq.cli", "worker", *self.worker_args, "--jobs", "1",
             *extra])
        self.children = [c for c in self.children if c.process.poll() is None]
        self.children.append(Child(number, process))
        log.info("autoscale:started_process", number=number, pid=process.pid,
                 processes=len(self._live()))

    def _drain(self, child: Child) -> None:
        child.draining = True
        child.process.send_signal(signal.SIGTERM)
        log.info("autoscale:draining_process", number=child.number, pid=child.process.pid)

    def _replace_dead(self) -> None:
        for child in list(self.children):
            code = child.process.poll()
            if code is None or child.draining:
                continue
            self.children.remove(child)
            self.restarts += 1
            log.warning("autoscale:process_died", number=child.number, pid=child.process.pid,
                        exit_code=code)
            self._start()

    def _stop_all(self) -> None:
        for child in self.children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.worker.shutdown_grace_seconds + 10
        for child in self.children:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
