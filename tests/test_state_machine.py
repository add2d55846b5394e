"""The job lifecycle as a hypothesis state machine, against a real PostgreSQL.

The engine's own functions run in-process (no worker subprocess, no mocks): jobs are
submitted with ``mediaq.submit``, claimed by three simulated workers of one machine
(``Claimer.claim``), driven through ``JobHandle`` (progress, log lines, steps, complete,
fail, retry later, hand back, stop cancelled), rescued with ``rescue_once`` after their
lease is made to run out, and pushed around by an operator (``mediaq.operations``).
Handles are kept after they go stale (rescued, re-claimed, finished) and the machine goes
on writing through them: such a write must raise LeaseLost and change nothing.

A Python model predicts every outcome; one invariant reads the database after each step.
The deterministic tests at the end replay, step by step, the shortest failures the
machine found.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, event
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg_pool import ConnectionPool

from mediaq import db, operations, submit, workflows
from mediaq.errors import InvalidTransition, LeaseLost
from mediaq.worker.claimer import Claimer
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.maintenance.rescuer import rescue_once
from mediaq.worker.resources import Capacity
from tests.helpers import diagnostic_workflow

try:  # a hypothesis internal, used only to bound how long a failure is shrunk
    from hypothesis.internal.conjecture import engine as conjecture_engine
except ImportError:  # pragma: no cover
    conjecture_engine = None

WORKFLOW = "T-SM"
HOST = "sm-host"
WORKERS = ("sm-worker-1", "sm-worker-2", "sm-worker-3")
CPU_LIMIT = 2  # per machine: the three workers share two numbered cpu slots
MAX_RESCUES = 3
TERMINAL = ("completed", "failed", "cancelled")
WAITING = ("pending", "queued")

RUN_SETTINGS = hypothesis_settings(
    # MEDIAQ_STATE_MACHINE_EXAMPLES=2000 for a longer hunt
    max_examples=int(os.environ.get("MEDIAQ_STATE_MACHINE_EXAMPLES", "50")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    report_multiple_bugs=False,  # shrink one failure only: shrinking on a database is slow
)

SHRINK_SECONDS = 20

# What a worker does with a job through its handle.
HANDLE_ACTIONS = ("progress", "log", "step", "complete", "fail", "retry_later", "retry_in_an_hour",
                  "hand_back", "stop_cancelled")
# A job-level transition: the query, its parameters, the status the open step closes with,
# and the status the job should end the attempt in.
TRANSITIONS: dict[str, tuple[str, dict[str, Any], str, str]] = {
    "complete": ("job_complete", {"output_metadata": None, "output_file_path": None,
                                  "log_line": "x\n"}, "completed", "completed"),
    "fail": ("job_fail", {"error_message": "e", "error_class": "permanent",
                          "output_metadata": None, "log_line": "x\n"}, "failed", "failed"),
    "retry_later": ("job_schedule_retry", {"delay_seconds": 0, "error_message": "e",
                                           "log_line": "x\n"}, "failed", "pending"),
    "retry_in_an_hour": ("job_schedule_retry", {"delay_seconds": 3600, "error_message": "e",
                                                "log_line": "x\n"}, "failed", "pending"),
    "hand_back": ("job_hand_back", {"log_line": "x\n"}, "cancelled", "pending"),
    "stop_cancelled": ("job_cancelled", {"log_line": "x\n"}, "cancelled", "cancelled"),
}
OPERATOR_VERBS = ("cancel", "pause", "resume", "retry")
PRIORITIES = st.sampled_from([None, 1, 5, 10])

# Between examples: no jobs, free slots, no VRAM reserved; workflows and workers stay.
# (DELETE rather than TRUNCATE: 1 ms instead of 40 ms, and shrinking runs many examples.)
RESET_SQL = (
    "DELETE FROM mediaq.workflow_jobs",  # cascades to step_executions, media_queue, outbox
    "DELETE FROM mediaq.media_workflow_events",
    "UPDATE mediaq.worker_slots SET job_id = NULL, job_attempt = NULL, worker_id = NULL,"
    " taken_at = NULL, vram_mb = 0 WHERE job_id IS NOT NULL",
    "UPDATE mediaq.worker_hosts SET vram_reserved_mb = 0 WHERE vram_reserved_mb <> 0",
)


SNAPSHOT_SQL = """
SELECT (SELECT to_jsonb(j) FROM workflow_jobs j WHERE j.id = %(job_id)s) AS job,
       (SELECT jsonb_agg(to_jsonb(se) ORDER BY se.id) FROM step_executions se
         WHERE se.job_id = %(job_id)s) AS step_executions,
       (SELECT jsonb_agg(to_jsonb(q) ORDER BY q.id) FROM media_queue q
         WHERE q.job_id = %(job_id)s) AS media_queue,
       (SELECT jsonb_agg(to_jsonb(s) ORDER BY s.host, s.category, s.slot)
          FROM worker_slots s) AS slots,
       (SELECT jsonb_agg(to_jsonb(h) ORDER BY h.host) FROM worker_hosts h) AS hosts,
       (SELECT count(*) FROM workflow_notifications) AS notifications,
       (SELECT count(*) FROM media_workflow_events) AS events
"""


@dataclass(frozen=True)
class StepInfo:
    id: int
    number: int
    name: str


@dataclass
class Rig:
    """What lives for one test: the pool, the workers' claimers, the workflow's steps."""

    pool: ConnectionPool[db.Connection]
    claimers: dict[str, Claimer]
    steps: list[StepInfo]

    def reset(self) -> None:
        with db.transaction(self.pool) as conn:
            for statement in RESET_SQL:
                conn.execute(statement)

    def submit(self, priority: int | None = None) -> db.Row:
        with db.transaction(self.pool) as conn:
            return submit(conn, WORKFLOW, "/inputs/state-machine.bin", priority=priority)

    def job(self, job_id: int) -> db.Row:
        with db.transaction(self.pool) as conn:
            row = conn.execute("SELECT * FROM workflow_jobs WHERE id = %s", (job_id,)).fetchone()
        assert row is not None
        return row

    def operate(self, verb: str, job_code: str) -> db.Row:
        with db.transaction(self.pool) as conn:
            result: db.Row = getattr(operations, verb)(conn, job_code, by="state-machine")
        return result

    def expire_and_rescue(self, job_ids: list[int], max_rescues: int = MAX_RESCUES
                          ) -> list[db.Row]:
        if job_ids:
            with db.transaction(self.pool) as conn:
                conn.execute("UPDATE workflow_jobs"
                             "   SET lease_expires_at = now() - interval '1 second'"
                             " WHERE id = ANY(%s)", (job_ids,))
                # Leases are the tasks' (issue 18): a running task's lease runs out.
                conn.execute("UPDATE job_tasks"
                             "   SET lease_expires_at = now() - interval '1 second'"
                             " WHERE job_id = ANY(%s) AND state = 'running'", (job_ids,))
        return rescue_once(self.pool, "rescuer", max_rescues=max_rescues, lease_seconds=3)


@dataclass
class JobModel:
    """What the job should look like in the database."""

    id: int
    code: str
    priority: int
    status: str = "pending"
    attempt: int = 0
    retry_count: int = 0
    rescue_count: int = 0
    worker: str | None = None
    backing_off: bool = False  # retry_after lies in the future: not claimable
    # an operator's requests to the running attempt
    cancel_requested: bool = False
    pause_requested: bool = False
    done_steps: set[int] = field(default_factory=set)

    def end_attempt(self, outcome: str) -> None:
        """The running attempt ends. A non-final outcome (back to the queue) honours what
        the operator asked of the attempt, as job_hand_back already does for a pause: a
        cancel request makes the job cancelled ("a pending job is cancelled at once"), a
        pause request makes it paused. Either way the requests end with the attempt."""
        if outcome not in TERMINAL:
            if self.cancel_requested:
                outcome = "cancelled"
            elif self.pause_requested:
                outcome = "paused"
        self.status = outcome
        self.cancel_requested = self.pause_requested = False


@dataclass(eq=False)
class Held:
    """A worker's handle on one claimed attempt, and the step execution it has open."""

    handle: JobHandle
    execution: tuple[int, int] | None = None  # (step_executions.id, step_number)

    def __repr__(self) -> str:
        h = self.handle
        return f"<handle of {h.worker_id} on job {h.job_id}, attempt {h.attempt}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class JobLifecycle(RuleBasedStateMachine):
    rig: ClassVar[Rig]

    jobs = Bundle("jobs")
    handles = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        self.rig.reset()
        self.model: dict[int, JobModel] = {}
        self.held: list[Held] = []
        self.seen: dict[int, db.Row] = {}  # each job's row as the last invariant check saw it

    # -- helpers -------------------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool[db.Connection]:
        return self.rig.pool

    def _owns(self, held: Held) -> bool:
        job = self.model[held.handle.job_id]
        return (job.status == "processing" and job.attempt == held.handle.attempt
                and job.worker == held.handle.worker_id)

    def _live(self) -> list[Held]:
        return [h for h in self.held if self._owns(h)]

    def _with_status(self, *statuses: str) -> list[int]:
        return sorted(j.id for j in self.model.values() if j.status in statuses)

    def _next_claimable(self) -> JobModel | None:
        if len(self._with_status("processing")) >= CPU_LIMIT:
            return None  # every slot of the machine is taken
        waiting = [j for j in self.model.values() if j.status in WAITING and not j.backing_off]
        return min(waiting, key=lambda j: (-j.priority, j.id), default=None)

    def _next_step(self, job: JobModel) -> StepInfo | None:
        return next((s for s in self.rig.steps if s.number not in job.done_steps), None)

    def _snapshot(self, job_id: int) -> db.Row | None:
        """Everything a write about ``job_id`` could touch (one round trip)."""
        with db.transaction(self.pool) as conn:
            return conn.execute(SNAPSHOT_SQL, {"job_id": job_id}).fetchone()

    # -- submitting and claiming -----------------------------------------------------------

    def _submit(self, priority: int | None) -> int:
        row = self.rig.submit(priority)
        assert row["status"] == "pending" and row["attempt"] == 0, row
        assert row["priority"] == (priority or 5)
        self.model[row["id"]] = JobModel(row["id"], row["job_code"], row["priority"])
        return int(row["id"])

    @initialize(target=jobs, priorities=st.lists(PRIORITIES, min_size=1, max_size=3))
    def first_jobs(self, priorities: list[int | None]) -> Any:
        return multiple(*(self._submit(p) for p in priorities))

    @rule(target=jobs, priority=PRIORITIES)
    def submit_job(self, priority: int | None) -> int:
        return self._submit(priority)

    @precondition(lambda self: bool(self._with_status(*WAITING, "paused")))
    @rule(target=handles, worker=st.sampled_from(WORKERS))
    def claim(self, worker: str) -> Any:
        expected = self._next_claimable()
        claimed = self.rig.claimers[worker].claim("cpu")
        if expected is None:
            assert claimed is None, (
                f"{worker} claimed job {claimed and claimed.id}; expected nothing "
                f"(running: {self._with_status('processing')}, limit {CPU_LIMIT})")
            event("claim: nothing to claim")
            return multiple()
        assert claimed is not None, f"{worker} claimed nothing; expected job {expected.id}"
        assert claimed.id == expected.id, f"claimed job {claimed.id}, expected {expected.id}"
        assert claimed.attempt == expected.attempt + 1, (claimed, expected)
        event(f"claim: attempt {min(claimed.attempt, 3)}{'+' if claimed.attempt >= 3 else ''}")
        expected.attempt = claimed.attempt
        expected.status = "processing"
        expected.worker = worker
        held = Held(claimed.handle(self.pool, worker))
        self.held.append(held)
        return held

    # -- workers writing through their handles ---------------------------------------------

    @rule(held=handles, action=st.sampled_from(HANDLE_ACTIONS), step_ok=st.booleans())
    def any_handle_writes(self, held: Held, action: str, step_ok: bool) -> None:
        """Any handle, live or stale (stale ones are the more common here)."""
        self._write(held, action, step_ok)

    @precondition(lambda self: bool(self._live()))
    @rule(data=st.data(), step_ok=st.booleans())
    def owner_runs_a_step(self, data: st.DataObject, step_ok: bool) -> None:
        """The owner starts its job's first unfinished step, or closes the one it has open."""
        self._write(data.draw(st.sampled_from(self._live()), label="owner"), "step", step_ok)

    @precondition(lambda self: bool(self._live()))
    @rule(data=st.data(), action=st.sampled_from(HANDLE_ACTIONS))
    def owner_writes(self, data: st.DataObject, action: str) -> None:
        """The handle that owns its job right now: progress, log, a step, an outcome."""
        self._write(data.draw(st.sampled_from(self._live()), label="owner"), action, True)

    def _write(self, held: Held, action: str, step_ok: bool) -> None:
        h = held.handle
        job = self.model[h.job_id]
        owner = self._owns(held)
        before = None if owner else self._snapshot(h.job_id)
        try:
            self._perform(held, job, action, step_ok, owner)
        except LeaseLost:
            assert not owner, f"{action} by the owner, {held}, raised LeaseLost"
            assert self._snapshot(h.job_id) == before, (
                f"{action} through the stale {held} raised LeaseLost but changed the database")
            event(f"stale handle refused: {action}")
            return
        assert owner, (f"{action} through the stale {held} was accepted "
                       f"(job {job.id} is {job.status}, attempt {job.attempt} of {job.worker})")
        event(f"owner wrote: {action}")

    def _perform(self, held: Held, job: JobModel, action: str, step_ok: bool,
                 owner: bool) -> None:
        """Make the write; when it succeeds (the handle owns the job) move the model on."""
        h = held.handle
        if action == "step" and held.execution is None:
            step = self._next_step(job)
            if step is None and not owner:
                step = self.rig.steps[0]
            if step is not None:
                execution_id = h.start_step(
                    step_id=step.id, step_number=step.number, step_name=step.name,
                    retry_attempt=0, progress_percent=10.0, input_data={"sm": True})
                held.execution = (execution_id, step.number)
                return
            action = "progress"  # every step is done: nothing left to start
        if action == "progress":
            h.progress(42.5, "state machine", force=True)
        elif action == "log":
            h.log("state machine")
        elif action == "step":
            assert held.execution is not None
            execution_id, number = held.execution
            h.commit_step(execution_id, status="completed" if step_ok else "failed",
                          output_data={"sm": True}, error_message=None if step_ok else "e",
                          error_class=None if step_ok else "transient",
                          log_message="step closed", progress_percent=50.0)
            held.execution = None
            if step_ok:
                job.done_steps.add(number)
        else:
            name, params, step_status, outcome = TRANSITIONS[action]
            if held.execution is None:
                h.finish(name, **params)
            else:
                execution_id, number = held.execution
                h.commit_step(execution_id, status=step_status, output_data=None,
                              error_message=None, error_class=None,
                              log_message="step closed", progress_percent=50.0,
                              then=(name, params))
                held.execution = None
                if step_status == "completed":
                    job.done_steps.add(number)
            if action in ("retry_later", "retry_in_an_hour"):
                job.retry_count += 1
                job.backing_off = action == "retry_in_an_hour"
            job.end_attempt(outcome)

    # -- leases running out ----------------------------------------------------------------

    @rule(data=st.data())
    def leases_expire_and_rescue(self, data: st.DataObject) -> None:
        """Time passes for some running jobs (maybe none): their leases run out, and a
        rescuer passes by."""
        running = self._with_status("processing")
        victims = data.draw(st.lists(st.sampled_from(running), unique=True) if running
                            else st.just([]), label="expired")
        # the daemon's default is 3; a fleet configured with 1 gives up sooner
        max_rescues = data.draw(st.sampled_from([MAX_RESCUES, 1]), label="max_rescues")
        rescued = self.rig.expire_and_rescue(victims, max_rescues)
        expected = {}
        for job_id in victims:
            job = self.model[job_id]
            gives_up = job.rescue_count >= max_rescues
            job.rescue_count += 1
            job.end_attempt("failed" if gives_up else "pending")
            expected[job_id] = job.status
            event(f"rescued to {job.status}")
        assert {r["id"]: r["status"] for r in rescued} == expected

    # -- operators ---------------------------------------------------------------------------

    @rule(job_id=jobs, verb=st.sampled_from(OPERATOR_VERBS))
    def operator(self, job_id: int, verb: str) -> None:
        """An operator acts on any job (often one in a state that refuses the verb)."""
        self._operate(job_id, verb)

    @precondition(lambda self: bool(self._with_status("processing")))
    @rule(data=st.data(), verb=st.sampled_from(["cancel", "pause", "resume"]))
    def operator_interrupts_a_running_job(self, data: st.DataObject, verb: str) -> None:
        running = self._with_status("processing")
        self._operate(data.draw(st.sampled_from(running), label="running job"), verb)

    @precondition(lambda self: bool(self._with_status("failed", "cancelled")))
    @rule(data=st.data())
    def operator_retries_a_stopped_job(self, data: st.DataObject) -> None:
        stopped = self._with_status("failed", "cancelled")
        self._operate(data.draw(st.sampled_from(stopped), label="stopped job"), "retry")

    def _operate(self, job_id: int, verb: str) -> None:
        job = self.model[job_id]
        status = job.status
        allowed = {
            "cancel": status in (*WAITING, "paused", "processing"),
            "pause": status in (*WAITING, "processing"),
            "resume": status == "paused" or (status == "processing" and job.pause_requested),
            "retry": status in ("failed", "cancelled"),
        }[verb]
        before = self._snapshot(job_id)
        try:
            self.rig.operate(verb, job.code)
        except InvalidTransition:
            assert not allowed, f"operator {verb} refused on a {status} job {job_id}"
            assert self._snapshot(job_id) == before, f"a refused {verb} changed the database"
            event(f"operator {verb} refused ({status})")
            return
        assert allowed, f"operator {verb} accepted on a {status} job {job_id}"
        event(f"operator {verb} accepted ({status})")
        if verb == "cancel":
            if status == "processing":
                job.cancel_requested = True
            else:
                job.status = "cancelled"
        elif verb == "pause":
            if status == "processing":
                job.pause_requested = True
            else:
                job.status = "paused"
        elif verb == "resume":
            if status == "processing":
                job.pause_requested = False
            else:
                job.status = "pending"
        else:
            job.status = "pending"
            job.retry_count += 1
            job.rescue_count = 0
            job.backing_off = False

    # -- the invariant -----------------------------------------------------------------------

    @invariant()
    def database_is_consistent(self) -> None:
        with db.transaction(self.pool) as conn:
            jobs = conn.execute(
                "SELECT j.id, j.status, j.attempt, j.retry_count, j.rescue_count, j.worker_id,"
                "       j.cancel_requested, j.pause_requested, j.completed_at,"
                "       (SELECT array_agg(q.status) FROM media_queue q WHERE q.job_id = j.id)"
                "           AS queue_statuses"
                "  FROM workflow_jobs j ORDER BY j.id").fetchall()
            slots = conn.execute(
                "SELECT host, category, slot, job_id, job_attempt, worker_id"
                "  FROM worker_slots WHERE job_id IS NOT NULL").fetchall()
            running_steps = conn.execute(
                "SELECT se.id, se.job_id, se.job_attempt, se.worker_id, j.status, j.attempt,"
                "       j.worker_id AS owner"
                "  FROM step_executions se JOIN workflow_jobs j ON j.id = se.job_id"
                " WHERE se.status = 'running'").fetchall()
        self._check_model(jobs)
        self._check_history(jobs)
        self._check_rows(jobs)
        self._check_slots(jobs, slots)
        self._check_running_steps(running_steps)

    def _check_model(self, jobs: list[db.Row]) -> None:
        """The database agrees with the model: status, attempt, retries, rescues, owner."""
        assert [r["id"] for r in jobs] == sorted(self.model)
        for row in jobs:
            job = self.model[row["id"]]
            got = (row["status"], row["attempt"], row["retry_count"], row["rescue_count"])
            want = (job.status, job.attempt, job.retry_count, job.rescue_count)
            assert got == want, f"job {job.id}: (status, attempt, retries, rescues) {got} != {want}"
            if job.status == "processing":
                assert row["worker_id"] == job.worker, (job.id, row["worker_id"], job.worker)
            # Operator requests belong to the running attempt: set only while it runs, and
            # never inherited by the next attempt.
            flags = (row["cancel_requested"], row["pause_requested"])
            want_flags = (job.cancel_requested, job.pause_requested)
            assert flags == want_flags, (
                f"job {job.id} ({row['status']}, attempt {row['attempt']}): (cancel_requested,"
                f" pause_requested) is {flags}, expected {want_flags}")

    def _check_history(self, jobs: list[db.Row]) -> None:
        """A completed job stays completed; attempt and retry_count never go back."""
        for row in jobs:
            last = self.seen.get(row["id"])
            if last is not None:
                if last["status"] == "completed":
                    assert row["status"] == "completed", f"completed job {row['id']} moved: {row}"
                assert row["attempt"] >= last["attempt"], (last, row)
                assert row["retry_count"] >= last["retry_count"], (last, row)
            self.seen[row["id"]] = row

    @staticmethod
    def _check_rows(jobs: list[db.Row]) -> None:
        """Finished jobs have completed_at; the queue row mirrors the job's status."""
        for row in jobs:
            if row["status"] in TERMINAL:
                assert row["completed_at"] is not None, f"{row['status']} job without completed_at"
            expected_queue = "queued" if row["status"] in WAITING else row["status"]
            assert row["queue_statuses"] == [expected_queue], (row["id"], row["status"],
                                                               row["queue_statuses"])

    @staticmethod
    def _check_slots(jobs: list[db.Row], slots: list[db.Row]) -> None:
        """One owner at a time: a running job holds exactly one slot of its attempt; no slot
        is held otherwise; a machine never has more slots taken than its limit."""
        by_id = {r["id"]: r for r in jobs}
        held_by: dict[int, list[db.Row]] = {}
        per_host: dict[str, int] = {}
        for slot in slots:
            held_by.setdefault(slot["job_id"], []).append(slot)
            per_host[slot["host"]] = per_host.get(slot["host"], 0) + 1
            job = by_id.get(slot["job_id"])
            assert job is not None and job["status"] == "processing" \
                and job["attempt"] == slot["job_attempt"], (
                    f"slot {slot} is held for a job that is not running under that attempt: {job}")
            assert slot["worker_id"] == job["worker_id"], (slot, job)
        for job in jobs:
            if job["status"] == "processing":
                assert job["worker_id"] is not None, job
                assert len(held_by.get(job["id"], [])) == 1, (
                    f"running job {job['id']} holds slots {held_by.get(job['id'])}")
            elif job["status"] in WAITING:
                assert job["id"] not in held_by, f"waiting job {job['id']} holds a slot"
        assert all(n <= CPU_LIMIT for n in per_host.values()), per_host

    @staticmethod
    def _check_running_steps(running_steps: list[db.Row]) -> None:
        """A step execution is open only within the running attempt that opened it."""
        per_job: dict[int, int] = {}
        for row in running_steps:
            per_job[row["job_id"]] = per_job.get(row["job_id"], 0) + 1
            assert (row["status"], row["attempt"], row["owner"]) == (
                "processing", row["job_attempt"], row["worker_id"]), (
                    f"step execution still running outside its attempt: {row}")
        assert all(n == 1 for n in per_job.values()), per_job


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def rig(database_url: str) -> Iterator[Rig]:
    pool = db.make_pool(database_url, size=4)
    try:
        doc = diagnostic_workflow(WORKFLOW, {"action": "noop"}, {"action": "noop"},
                                  resource_category="cpu")
        with db.transaction(pool) as conn:
            workflows.apply(conn, workflows.normalise(doc))
        with db.transaction(pool) as conn:
            steps = [StepInfo(r["id"], r["step_number"], r["step_name"]) for r in conn.execute(
                "SELECT ws.id, ws.step_number, ws.step_name FROM workflow_steps ws"
                "  JOIN workflow_definitions wd ON wd.id = ws.workflow_id"
                " WHERE wd.workflow_code = %s AND wd.is_current ORDER BY ws.step_number",
                (WORKFLOW,)).fetchall()]
        claimers = {}
        for worker in WORKERS:
            claimer = Claimer(pool, worker_id=worker, host=HOST,
                              capacity=Capacity(categories=("cpu",), limits={"cpu": CPU_LIMIT},
                                                vram_budget_mb=0),
                              queues=None, lease_seconds=300)
            claimer.register("test")
            claimers[worker] = claimer
        yield Rig(pool=pool, claimers=claimers, steps=steps)
    finally:
        pool.close()


# -- the state machine -----------------------------------------------------------------------


def test_job_lifecycle_state_machine(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every example runs on the database, so shrinking a failure can take minutes; a
    # 20-second shrink still ends at a short, readable sequence.
    if conjecture_engine is not None:
        monkeypatch.setattr(conjecture_engine, "MAX_SHRINKING_SECONDS", SHRINK_SECONDS,
                            raising=False)
    machine = type("JobLifecycleOnRig", (JobLifecycle,), {"rig": rig})
    run_state_machine_as_test(machine, settings=RUN_SETTINGS)


# -- the machine's shortest failures, replayed ------------------------------------------------


def _claim(rig: Rig, worker: str = WORKERS[0]) -> JobHandle:
    claimed = rig.claimers[worker].claim("cpu")
    assert claimed is not None
    return claimed.handle(rig.pool, worker)


def _end_attempt(rig: Rig, handle: JobHandle, how: str) -> None:
    if how == "rescued":
        assert [r["id"] for r in rig.expire_and_rescue([handle.job_id])] == [handle.job_id]
    else:
        name, params, _, _ = TRANSITIONS[how]
        handle.finish(name, **params)


@pytest.mark.parametrize("how", ["rescued", "retry_later", "hand_back"])
@pytest.mark.parametrize(("verb", "outcome"), [("cancel", "cancelled"), ("pause", "paused")])
def test_a_request_to_a_running_job_is_honoured_when_its_attempt_ends(
    rig: Rig, verb: str, outcome: str, how: str
) -> None:
    """An operator cancels (or pauses) a running job; before its worker sees the request, the
    attempt ends without finishing the job: the worker dies and the job is rescued, or a step
    fails transiently and a retry is scheduled, or the worker drains and hands it back. The
    job must not be started again as if nothing had been asked."""
    job = rig.submit()
    handle = _claim(rig)
    assert rig.operate(verb, job["job_code"])["status"] == "processing"
    _end_attempt(rig, handle, how)
    row = rig.job(job["id"])
    again = rig.claimers[WORKERS[1]].claim("cpu")
    assert again is None, (
        f"{verb} was requested, yet after '{how}' the job went back to {row['status']} with"
        f" cancel_requested={row['cancel_requested']}, pause_requested={row['pause_requested']}"
        f" and {WORKERS[1]} claimed it again (attempt {again.attempt})")
    row = rig.job(job["id"])
    assert row["status"] == outcome
    assert not row["cancel_requested"] and not row["pause_requested"]


@pytest.mark.parametrize("how", ["complete", "fail"])
def test_resume_is_refused_on_a_job_that_finished_while_a_pause_was_requested(
    rig: Rig, how: str
) -> None:
    """Pause a running job, let its worker finish it anyway (a race the executor allows),
    then resume: there is nothing to resume, so the operator must get InvalidTransition."""
    job = rig.submit()
    handle = _claim(rig)
    assert rig.operate("pause", job["job_code"])["status"] == "processing"
    _end_attempt(rig, handle, how)
    finished = rig.job(job["id"])
    with pytest.raises(InvalidTransition):
        rig.operate("resume", job["job_code"])
    assert rig.job(job["id"])["status"] == finished["status"]
