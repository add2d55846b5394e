"""The worker daemon: the producer loop that claims work and hands it to job threads.

Wakes on LISTEN/NOTIFY (worker/listener.py: the channels of the categories it has room
in, on the session that also holds its liveness lock) with a polling fallback; never
holds a transaction open while media is processed; on SIGTERM stops claiming,
lets running jobs finish within the grace time, hands back the rest, and exits.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType

import psycopg
import structlog

from mediaq import __version__, db
from mediaq.actions import available_actions
from mediaq.config import Settings
from mediaq.errors import Paused
from mediaq.host_stats import watched_roots
from mediaq.notify.notifier import Notifier
from mediaq.triggers.runner import Triggers
from mediaq.worker.claimer import ClaimedJob, Claimer
from mediaq.worker.executor import Executor
from mediaq.worker.heartbeat import Heartbeat
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.listener import Listener
from mediaq.worker.maintenance.object_sweeper import ObjectSweeper
from mediaq.worker.maintenance.pruner import Pruner
from mediaq.worker.maintenance.publisher import Publisher
from mediaq.worker.maintenance.rescuer import Rescuer
from mediaq.worker.outcomes import Abandoned, JobOutcome, TaskDone
from mediaq.worker.resources import Capacity, read_gpu, vram_budget
from mediaq.worker.storage_health import StorageWatch

log = structlog.get_logger("mediaq.worker")

BURST_RETRY_HORIZON_S = 60.0
STORAGE_FIRST_CHECK_WAIT_S = 10.0
EXIT_RECYCLE = 75  # sysexits' EX_TEMPFAIL: stuck steps abandoned, restart me


@dataclass(frozen=True)
class WorkerOptions:
    categories: tuple[str, ...]
    limits: dict[str, int]
    vram_mb: int | None = None
    queues: list[str] | None = None
    burst: bool = False
    worker_id: str | None = None
    jobs: int | None = None  # most jobs at once in this process (None: the machine limits)


class Worker:
    def __init__(self, settings: Settings, url: str, options: WorkerOptions) -> None:
        self.settings = settings
        self.url = url
        self.options = options
        self.worker_id = options.worker_id or (
            f"{settings.worker.host_id}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
        gpu = read_gpu()
        self.capacity = Capacity(
            categories=options.categories, limits=options.limits,
            vram_budget_mb=vram_budget(options.vram_mb, gpu), gpu=gpu,
            process_jobs=options.jobs,
        )
        # Worker transactions last milliseconds; half a lease idle in one means frozen.
        # One connection per job thread, plus two that the producer, the heartbeat and
        # the rescuer share (their transactions are short and rare): with the listener,
        # a --jobs 1 process holds at most 4 sessions (benchmarks/scale.py counts them).
        lease_seconds = settings.worker.lease_seconds
        self.pool = db.make_pool(url, size=self.capacity.max_parallel + 2,
                                 idle_in_transaction_ms=max(1000, lease_seconds * 500))
        self.claimer = Claimer(
            self.pool, worker_id=self.worker_id, host=settings.worker.host_id,
            capacity=self.capacity, queues=options.queues, lease_seconds=lease_seconds,
        )
        self.executor = Executor(settings)
        self.running: dict[int, JobHandle] = {}
        self.running_lock = threading.Lock()
        # Jobs this worker left 'processing' (abandoned on a database error, or crashed):
        # their lease hands them on later, so a burst run that leaves any fails.
        self.left_processing: list[str] = []
        self.stopping = threading.Event()
        self.wake = threading.Event()
        # Categories whose last claim found nothing (producer thread only), and the
        # categories named by wake-ups since the producer last looked (see _forget_idle).
        self.idle_categories: set[str] = set()
        self.notified: set[str] = set()
        self.notified_lock = threading.Lock()
        self.idle_since = time.monotonic()  # when idle_categories was last emptied
        self.heartbeat = Heartbeat(self.pool, self.worker_id, settings.worker.lease_seconds,
                                   self.running, self.running_lock,
                                   roots=watched_roots(settings.storage))
        self.listener = Listener(url, self.pool, worker_id=self.worker_id,
                                 host=settings.worker.host_id, capacity=self.capacity,
                                 notice=self._notice)
        self.listen_thread = threading.Thread(target=self.listener.run, name="mediaq-listen",
                                              daemon=True)
        self.rescuer = Rescuer(self.pool, self.worker_id, settings.worker.max_rescues,
                               settings.worker.lease_seconds, self.wake)
        self.pruner = Pruner(url, settings.storage.retention_days,
                             settings.storage.staging)
        # Outputs a worker committed but did not live to publish (publications).
        self.publisher = Publisher(self.pool, self.executor.objects, self.worker_id)
        self.object_sweeper = (ObjectSweeper(url, self.executor.objects,
                                             settings.storage.s3_sweep_seconds)
                               if settings.storage.remote_output_root else None)
        # Room for the threads of abandoned steps still stuck in native code (see
        # mediaq/worker/watchdog.py): past that many, the worker recycles itself.
        self.jobs_pool = ThreadPoolExecutor(
            max_workers=max(1, self.capacity.max_parallel)
            + settings.worker.recycle_after_abandoned,
            thread_name_prefix="mediaq-job")
        self.abandoned: set[int] = set()  # id() of the handles of abandoned, stuck steps
        self.executor.watchdog.on_abandoned = self._abandoned
        self.storage = StorageWatch(self.pool, settings.storage, worker_id=self.worker_id,
                                    host=settings.worker.host_id,
                                    categories=list(self.capacity.categories),
                                    min_free_memory_mb=settings.worker.min_free_memory_mb)
        self.log = log.bind(worker_id=self.worker_id)
        self.processed = 0
        self.notifier = (Notifier(settings, url, notifier_id=f"{self.worker_id}:notify")
                         if settings.notifications.enabled else None)
        self.triggers = (Triggers(settings, url, runner_id=f"{self.worker_id}:triggers")
                         if settings.triggers.enabled and not options.burst else None)
        # The notifier and the triggers run in one process of each machine, the one whose
        # listening session holds the machine's duties (listener.py): not in every one.
        self.duty_threads: list[threading.Thread] = []
        self.duty_lock = threading.Lock()
        if (self.notifier is not None and not options.burst) or self.triggers is not None:
            self.listener.on_duties = self._start_duties

    # -- life cycle --------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (or, in burst mode, until nothing is left); jobs processed."""
        # Import every action (codecs, plugins) now, not inside the first job's time.
        actions = available_actions()
        # The liveness lock first: no job is claimed by a worker rescuers cannot see die.
        self.claimer.register(__version__, liveness=self.listener.open())
        self.log.info("worker:started", actions=len(actions),
                      categories=list(self.capacity.categories), limits=self.capacity.limits,
                      vram_budget_mb=self.capacity.vram_budget_mb,
                      gpu=self.capacity.gpu.name if self.capacity.gpu else None)
        unserved = self.capacity.unserved()
        if unserved:  # said once: such jobs wait for another worker (job_etas says so too)
            self.log.warning("worker:cannot_serve", categories=sorted(unserved),
                             reasons=unserved)
        # The first storage check before the first claim: a bad root claims nothing (a
        # hung mount stalls the check's thread, never this one: claims wait meanwhile).
        self.storage.start()
        self.storage.first_check.wait(STORAGE_FIRST_CHECK_WAIT_S)
        self.listen_thread.start()
        self.heartbeat.start()
        self.rescuer.start()
        self.publisher.start()
        if not self.options.burst:
            self.pruner.start()
            if self.object_sweeper is not None:
                self.object_sweeper.start()
        try:
            self._produce()
        finally:
            self._drain()
            with self.duty_lock:
                for helper in (self.notifier, self.triggers):
                    if helper is not None:
                        helper.stop()
                threads, self.duty_threads = self.duty_threads, []
            for thread in threads:
                thread.join()
        return self.processed

    def _start_duties(self) -> None:
        """This process holds its machine's duties (called by the listener): deliver
        notifications (all along; burst mode delivers once at the end instead) and run
        the watch folders and schedules beside the jobs (not in burst mode)."""
        with self.duty_lock:
            if self.stopping.is_set() or self.duty_threads:
                return
            if self.notifier is not None and not self.options.burst:
                self.duty_threads.append(threading.Thread(target=self.notifier.run,
                                                          name="mediaq-notifier"))
            if self.triggers is not None:
                self.duty_threads.append(threading.Thread(target=self.triggers.run,
                                                          name="mediaq-triggers"))
            for thread in self.duty_threads:
                thread.start()

    def stop(self) -> None:
        """Stop claiming (SIGTERM/SIGINT); running jobs drain within the grace time."""
        if not self.stopping.is_set():
            self.log.info("worker:stopping", running=len(self.running))
            self.heartbeat.status = "draining"
            self.stopping.set()
            self.wake.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- the producer ------------------------------------------------------------------

    def _produce(self) -> None:
        while not self.stopping.is_set():
            if self.options.burst and self.storage.problem is not None:
                # Nothing can run here until an operator fixes the root: a burst run ends
                # (the jobs wait for a healthy worker) rather than wait for ever.
                self.log.error("worker:burst_storage_unhealthy", problem=self.storage.problem)
                return
            claimed = self._claim_while_room()
            if claimed:
                continue
            if self.options.burst and self.capacity.total_running == 0 \
                    and not self.claimer.runnable_soon(BURST_RETRY_HORIZON_S):
                self.log.info("worker:queue_empty")
                if self.notifier is not None:
                    self.notifier.run(until_idle=True)
                return
            woken = self.wake.wait(self.settings.worker.poll_seconds)
            self.wake.clear()
            self._forget_idle(everything=not woken)

    def _forget_idle(self, *, everything: bool) -> None:
        """Make categories claimable again: those named by a wake-up since the last look
        (a NOTIFY's payload is the category with new work or a freed slot; this process's
        own finished jobs free theirs), all of them on any other payload, and at least
        every poll interval, busy or not (jobs whose retry time came, slots freed without
        a NOTIFY), those where one read-only statement sees a ready task: an idle
        worker's poll writes nothing and claims in no category without work."""
        with self.notified_lock:
            named, self.notified = self.notified, set()
        self.idle_categories -= named
        if not named <= set(self.capacity.categories):
            self.idle_categories.clear()
        now = time.monotonic()
        if (everything or now - self.idle_since >= self.settings.worker.poll_seconds) \
                and self.idle_categories:
            self.idle_since = now
            free = [c for c in self.capacity.free_categories() if c in self.idle_categories]
            try:
                self.idle_categories -= self.claimer.ready_categories(free)
            except psycopg.OperationalError as exc:
                self.log.warning("claim:database_error", error=str(exc))
                self.idle_categories.clear()  # the claims retry (and wait) as before

    def _claim_while_room(self) -> bool:
        if self.storage.problem is not None:
            return False  # said by the storage watch: log, worker row, waiting reasons
        claimed_any = False
        for category in self.capacity.free_categories():
            if self.stopping.is_set():
                break
            if category in self.idle_categories:
                continue  # found nothing last time, and nothing has changed since
            try:
                job = self.claimer.claim(category)
            except psycopg.OperationalError as exc:
                self.log.warning("claim:database_error", error=str(exc))
                time.sleep(self.settings.worker.poll_seconds)
                return False
            if job is not None:
                self._start(job)
                claimed_any = True
            else:
                # Skip it until a wake-up names it or a poll's read-only look sees work
                # (_forget_idle): every job's completion wakes the producer, so without
                # this each job cost one empty claim per other category.
                self.idle_categories.add(category)
        return claimed_any

    def _start(self, job: ClaimedJob) -> None:
        handle = job.handle(self.pool, self.worker_id)
        self.capacity.take(job.category)
        with self.running_lock:
            self.running[handle.task_ids[0]] = handle
        self.log.info("job:claimed", job_id=job.id, job_code=job.job_code, attempt=job.attempt,
                      category=job.category, task_id=job.task_id)
        future = self.jobs_pool.submit(self._run_tasks, handle, job.workflow_id)
        future.add_done_callback(functools.partial(self._finished, handle))

    def _run_tasks(self, handle: JobHandle, workflow_id: int) -> JobOutcome:
        """Run the claimed task, then (run-ahead) the job's next ready task this slot can
        run, claimed at once, so a chain runs start to finish on one worker; the last
        outcome. The slot is released and taken again by the claims (triggers), the
        process's capacity stays taken throughout."""
        while True:
            outcome = self.executor.run(handle, workflow_id)
            if not isinstance(outcome, TaskDone) or self.stopping.is_set() \
                    or self.storage.problem is not None:
                return outcome
            try:
                job = self.claimer.claim(handle.category, prefer_job_id=handle.job_id,
                                         only_preferred=True)
            except psycopg.OperationalError:
                return outcome
            if job is None:
                return outcome
            if id(handle) in self.abandoned:  # not this stuck thread's to go on: the
                return outcome  # claimed task's lease runs out and it is rescued
            with self.running_lock:
                self.running.pop(handle.task_ids[0], None)
                handle.continue_with(job.task_id, job.task_attempt, job.step_id,
                                     job.item_index, job.attempt)
                self.running[handle.task_ids[0]] = handle
                self.processed += 1
            self.log.info("job:run_ahead", job_id=job.id, job_code=job.job_code,
                          task_id=job.task_id)

    def _abandoned(self, handle: JobHandle) -> None:
        """The watchdog abandoned this job's step (its outcome is written): stop renewing
        its lease and free its slot; its thread may stay stuck, so past
        ``recycle_after_abandoned`` such threads the worker drains and exits to be
        restarted (a thread cannot be killed in process)."""
        with self.running_lock:
            if self.running.get(handle.task_ids[0]) is handle:
                del self.running[handle.task_ids[0]]
            self.abandoned.add(id(handle))
            stuck = len(self.abandoned)
        self.capacity.give_back(handle.category)
        self.log.warning("worker:step_abandoned", job_id=handle.job_id,
                         job_code=handle.job_code, stuck_threads=stuck)
        if stuck >= self.settings.worker.recycle_after_abandoned:
            self.log.error("worker:recycling", stuck_threads=stuck)
            self.stop()
        self._notice(handle.category)

    def _finished(self, handle: JobHandle, future: Future[JobOutcome]) -> None:
        with self.running_lock:
            if id(handle) in self.abandoned:  # its slot was given back when abandoned
                self.abandoned.discard(id(handle))
                return
            self.running.pop(handle.task_ids[0], None)
            self.processed += 1
        self.capacity.give_back(handle.category)
        error = future.exception()
        if error is not None:
            self.log.error("job:crashed", job_id=handle.job_id, error=repr(error))
        if error is not None or isinstance(future.result(), Abandoned):
            # A database outage mid-write: whether the task is still ours is unknown; its
            # lease is given up once the database answers, and a rescuer hands it on.
            self.rescuer.give_up(handle.task_ids, handle.task_attempts)
            with self.running_lock:
                self.left_processing.append(handle.job_code)
        self._notice(handle.category)

    def _notice(self, payload: str) -> None:
        """Wake the producer for ``payload`` (a category, or anything else for all)."""
        with self.notified_lock:
            self.notified.add(payload)
        self.wake.set()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.worker.shutdown_grace_seconds
        while self.capacity.total_running and time.monotonic() < deadline:
            time.sleep(0.1)
        with self.running_lock:
            leftovers = list(self.running.values())
        for handle in leftovers:
            handle.stop_signal.stop(Paused("worker shutting down"))
        # Threads of abandoned steps may never return: wait for the others only.
        while self.running and self.abandoned and time.monotonic() < deadline + 10:
            time.sleep(0.1)
        self.jobs_pool.shutdown(wait=not self.abandoned)
        self.heartbeat.halt.set()
        self.storage.halt.set()
        self.rescuer.halt.set()
        self.publisher.halt.set()
        self.pruner.halt.set()
        if self.object_sweeper is not None:
            self.object_sweeper.halt.set()
        try:  # best effort: with the server gone, the workers view shows the lapse
            with db.transaction(self.pool, timeout=3) as conn:
                db.execute(conn, "worker_stopped", {"worker_id": self.worker_id})
        except psycopg.Error:
            pass
        # Only now, with every job finished or handed back, let the liveness lock go.
        self.listener.halt.set()
        self.listen_thread.join(timeout=5)
        self.listener.close()
        self.pool.close()
        self.log.info("worker:stopped", processed=self.processed)
        if self.abandoned:
            # The interpreter would wait at exit for the stuck threads: leave now, with a
            # status that tells systemd (Restart=on-failure) to start a fresh worker.
            self.log.error("worker:exit_with_stuck_steps", stuck_threads=len(self.abandoned))
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_RECYCLE)
