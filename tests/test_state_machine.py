"""The job lifecycle as a hypothesis state machine, against a real PostgreSQL.

The engine's own functions run in-process (no worker subprocess, no mocks): jobs are
submitted with ``mediaq.submit``, claimed by three simulated workers of one machine
(``Claimer.claim``), driven through ``JobHandle`` (progress, log lines, steps, complete,
fail, retry later, hand back, cancelled), rescued with ``rescue_once`` after their lease
is made to expire, and pushed around by an operator (``mediaq.operations``). Handles are
kept after they go stale (rescued, re-claimed, finished), and the machine goes on using
them: every write through a handle that no longer owns its job must raise LeaseLost and
change nothing.

A Python model predicts every outcome; invariants read the database after each step.
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
from mediaq.errors import LeaseLost
from mediaq.operations import InvalidTransition
from mediaq.worker.claimer import Claimer
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.maintenance.rescuer import rescue_once
from mediaq.worker.resources import Capacity
from tests.helpers import diagnostic_workflow

WORKFLOW = "T-SM"
HOST = "sm-host"
WORKERS = ("sm-worker-1", "sm-worker-2", "sm-worker-3")
CPU_LIMIT = 2  # per machine: the three workers share two numbered cpu slots
MAX_RESCUES = 3
TERMINAL = ("completed", "failed", "cancelled")
WAITING = ("pending", "queued")

RUN_SETTINGS = hypothesis_settings(
    # MEDIAQ_STATE_MACHINE_EXAMPLES=2000 for a long hunt
    max_examples=int(os.environ.get("MEDIAQ_STATE_MACHINE_EXAMPLES", "50")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# What a worker does with a job through its handle.
HANDLE_ACTIONS = ("progress", "log", "step", "complete", "fail", "retry_later", "hand_back",
                  "stop_cancelled")
# A job-level transition: (query, its parameters, the status the open step is closed with).
TRANSITIONS: dict[str, tuple[str, dict[str, Any], str]] = {
    "complete": ("job_complete", {"output_metadata": None, "output_file_path": None,
                                  "log_line": "x\n"}, "completed"),
    "fail": ("job_fail", {"error_message": "e", "error_class": "permanent",
                          "output_metadata": None, "log_line": "x\n"}, "failed"),
    "retry_later": ("job_schedule_retry", {"delay_seconds": 0, "error_message": "e",
                                           "log_line": "x\n"}, "failed"),
    "hand_back": ("job_hand_back", {"log_line": "x\n"}, "cancelled"),
    "stop_cancelled": ("job_cancelled", {"log_line": "x\n"}, "cancelled"),
}

OPERATOR_VERBS = ("cancel", "pause", "resume", "retry")
PRIORITIES = st.sampled_from([None, 1, 5, 10])

RESET_SQL = (
    "TRUNCATE mediaq.workflow_jobs, mediaq.step_executions, mediaq.media_queue,"
    " mediaq.workflow_notifications, mediaq.media_workflow_events CASCADE",
    "UPDATE mediaq.worker_slots SET job_id = NULL, job_attempt = NULL, worker_id = NULL,"
    " taken_at = NULL, vram_mb = 0",
    "UPDATE mediaq.worker_hosts SET vram_reserved_mb = 0",
)


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
    # operator requests to the attempt that is running (meaningless once it stops)
    cancel_requested: bool = False
    pause_requested: bool = False
    done_steps: set[int] = field(default_factory=set)

    def stop_running(self, status: str) -> None:
        self.status = status
        self.cancel_requested = self.pause_requested = False


@dataclass(eq=False)
class Held:
    """A worker's handle on one claimed attempt, and the step execution it has open."""

    handle: JobHandle
    execution: tuple[int, int] | None = None  # (step_executions.id, step_number)

    def __repr__(self) -> str:
        h = self.handle
        return f"<handle {h.worker_id} job={h.job_id} attempt={h.attempt}>"


class JobLifecycle(RuleBasedStateMachine):
    rig: ClassVar[Rig]
    check_operator_requests: ClassVar[bool] = False

    jobs = Bundle("jobs")
    handles = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        with db.transaction(self.rig.pool) as conn:
            for statement in RESET_SQL:
                conn.execute(statement)
        self.model: dict[int, JobModel] = {}
        self.held: list[Held] = []
        self.seen: dict[int, db.Row] = {}  # the last database row each invariant pass saw

    # -- helpers -------------------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool[db.Connection]:
        return self.rig.pool

    def _query(self, sql: str, params: Any = None) -> list[db.Row]:
        with db.transaction(self.pool) as conn:
            return conn.execute(sql, params).fetchall()

    def _owns(self, held: Held) -> bool:
        job = self.model[held.handle.job_id]
        return (job.status == "processing" and job.attempt == held.handle.attempt
                and job.worker == held.handle.worker_id)

    def _live(self) -> list[Held]:
        return [h for h in self.held if self._owns(h)]

    def _running(self) -> list[int]:
        return sorted(j.id for j in self.model.values() if j.status == "processing")

    def _next_claimable(self) -> JobModel | None:
        if len(self._running()) >= CPU_LIMIT:
            return None  # every slot of the machine is taken
        waiting = [j for j in self.model.values() if j.status in WAITING]
        return min(waiting, key=lambda j: (-j.priority, j.id), default=None)

    def _next_step(self, job: JobModel) -> StepInfo | None:
        return next((s for s in self.rig.steps if s.number not in job.done_steps), None)

    def _snapshot(self, job_id: int) -> tuple[Any, ...]:
        """Everything a write about ``job_id`` could touch."""
        with db.transaction(self.pool) as conn:
            return (
                conn.execute("SELECT * FROM workflow_jobs WHERE id = %s", (job_id,)).fetchone(),
                conn.execute("SELECT * FROM step_executions WHERE job_id = %s ORDER BY id",
                             (job_id,)).fetchall(),
                conn.execute("SELECT * FROM media_queue WHERE job_id = %s", (job_id,)).fetchall(),
                conn.execute("SELECT * FROM worker_slots ORDER BY host, category, slot")
                .fetchall(),
                conn.execute("SELECT * FROM worker_hosts ORDER BY host").fetchall(),
                conn.execute("SELECT (SELECT count(*) FROM workflow_notifications) AS n,"
                             " (SELECT count(*) FROM media_workflow_events) AS e").fetchone(),
            )

    # -- submitting and claiming -----------------------------------------------------------

    def _submit(self, priority: int | None) -> int:
        with db.transaction(self.pool) as conn:
            row = submit(conn, WORKFLOW, "/inputs/state-machine.bin", priority=priority)
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

    @precondition(lambda self: any(j.status in (*WAITING, "paused") for j in self.model.values()))
    @rule(target=handles, worker=st.sampled_from(WORKERS))
    def claim(self, worker: str) -> Any:
        expected = self._next_claimable()
        claimed = self.rig.claimers[worker].claim("cpu")
        if expected is None:
            assert claimed is None, (
                f"{worker} claimed job {claimed and claimed.id}; expected nothing "
                f"(running: {self._running()}, limit {CPU_LIMIT})")
            event("claim: nothing to claim")
            return multiple()
        assert claimed is not None, f"{worker} claimed nothing; expected job {expected.id}"
        assert claimed.id == expected.id, f"claimed job {claimed.id}, expected {expected.id}"
        assert claimed.attempt == expected.attempt + 1, (claimed, expected)
        expected.attempt = claimed.attempt
        event(f"claim: attempt {min(claimed.attempt, 3)}{'+' if claimed.attempt >= 3 else ''}")
        expected.status = "processing"
        expected.worker = worker
        held = Held(JobHandle(self.pool, worker, claimed.id, claimed.job_code, claimed.attempt,
                              "cpu"))
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
            assert not owner, f"{action} by the owner {held} raised LeaseLost"
            after = self._snapshot(h.job_id)
            assert after == before, f"{action} through stale {held} changed the database"
            event(f"stale handle refused: {action}")
            return
        event(f"owner wrote: {action}")
        assert owner, (f"{action} through stale {held} was accepted "
                       f"(job {job.id} is {job.status}, attempt {job.attempt}, {job.worker})")

    def _perform(self, held: Held, job: JobModel, action: str, step_ok: bool,
                 owner: bool) -> None:
        """Make the write; on success (the handle owns the job) move the model along."""
        h = held.handle
        if action == "step" and held.execution is None:
            step = self._next_step(job)
            if step is None:
                if owner:
                    action = "progress"  # every step is done: nothing left to start
                else:
                    step = self.rig.steps[0]
            if step is not None:
                execution_id = h.start_step(
                    step_id=step.id, step_number=step.number, step_name=step.name,
                    retry_attempt=0, progress_percent=10.0, input_data={"sm": True})
                held.execution = (execution_id, step.number)
                return
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
            name, params, step_status = TRANSITIONS[action]
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
            if action == "retry_later":
                job.retry_count += 1
                job.stop_running("pending")
            elif action == "hand_back":
                job.stop_running("paused" if job.pause_requested else "pending")
            else:
                job.stop_running({"complete": "completed", "fail": "failed",
                                  "stop_cancelled": "cancelled"}[action])

    # -- leases running out ----------------------------------------------------------------

    @rule(data=st.data())
    def leases_expire_and_rescue(self, data: st.DataObject) -> None:
        """Time passes for some running jobs (maybe none): their leases run out; a rescuer
        passes by."""
        running = self._running()
        victims = data.draw(st.lists(st.sampled_from(running), unique=True) if running
                            else st.just([]), label="expired")
        if victims:
            with db.transaction(self.pool) as conn:
                conn.execute("UPDATE workflow_jobs"
                             "   SET lease_expires_at = now() - interval '1 second'"
                             " WHERE id = ANY(%s)", (victims,))
        # the daemon's setting is 3; a fleet configured with 1 gives up sooner
        max_rescues = data.draw(st.sampled_from([MAX_RESCUES, 1]), label="max_rescues")
        rescued = rescue_once(self.pool, "rescuer", max_rescues=max_rescues, lease_seconds=3)
        expected = {}
        for job_id in victims:
            job = self.model[job_id]
            job.stop_running("failed" if job.rescue_count >= max_rescues else "pending")
            job.rescue_count += 1
            expected[job_id] = job.status
            event(f"rescued to {job.status}")
        assert {r["id"]: r["status"] for r in rescued} == expected

    # -- operators ---------------------------------------------------------------------------

    @rule(job_id=jobs, verb=st.sampled_from(OPERATOR_VERBS))
    def operator(self, job_id: int, verb: str) -> None:
        """An operator acts on any job (often one in a state that refuses the verb)."""
        self._operate(job_id, verb)

    @precondition(lambda self: bool(self._running()))
    @rule(data=st.data(), verb=st.sampled_from(["cancel", "pause", "resume"]))
    def operator_interrupts_a_running_job(self, data: st.DataObject, verb: str) -> None:
        self._operate(data.draw(st.sampled_from(self._running()), label="running job"), verb)

    @precondition(lambda self: bool(self._stopped()))
    @rule(data=st.data())
    def operator_retries_a_stopped_job(self, data: st.DataObject) -> None:
        self._operate(data.draw(st.sampled_from(self._stopped()), label="stopped job"), "retry")

    def _stopped(self) -> list[int]:
        return sorted(j.id for j in self.model.values() if j.status in ("failed", "cancelled"))

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
            with db.transaction(self.pool) as conn:
                getattr(operations, verb)(conn, job.code, by="state-machine")
        except InvalidTransition:
            assert not allowed, f"operator {verb} refused on a {status} job {job_id}"
            assert self._snapshot(job_id) == before, f"a refused {verb} changed the database"
            event(f"operator {verb} refused ({status})")
            return
        event(f"operator {verb} accepted ({status})")
        assert allowed, f"operator {verb} accepted on a {status} job {job_id}"
        if verb == "cancel":
            if status == "processing":
                job.cancel_requested = True
            else:
                job.stop_running("cancelled")
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

    # -- invariants ------------------------------------------------------------------------

    def _jobs(self) -> list[db.Row]:
        return self._query(
            "SELECT j.id, j.status, j.attempt, j.retry_count, j.rescue_count, j.worker_id,"
            "       j.cancel_requested, j.pause_requested, j.completed_at,"
            "       (SELECT array_agg(q.status) FROM media_queue q WHERE q.job_id = j.id)"
            "           AS queue_statuses"
            "  FROM workflow_jobs j ORDER BY j.id")

    @invariant()
    def database_matches_model(self) -> None:
        rows = self._jobs()
        assert [r["id"] for r in rows] == sorted(self.model)
        for row in rows:
            job = self.model[row["id"]]
            got = (row["status"], row["attempt"], row["retry_count"], row["rescue_count"])
            want = (job.status, job.attempt, job.retry_count, job.rescue_count)
            assert got == want, f"job {job.id}: (status, attempt, retries, rescues) {got} != {want}"
            if job.status == "processing":
                assert row["worker_id"] == job.worker, (job.id, row["worker_id"], job.worker)
                flags = (row["cancel_requested"], row["pause_requested"])
                assert flags == (job.cancel_requested, job.pause_requested), (
                    f"job {job.id}, attempt {job.attempt} of {job.worker}: (cancel_requested,"
                    f" pause_requested) is {flags}, expected"
                    f" {(job.cancel_requested, job.pause_requested)}")

    @invariant()
    def completed_is_final_and_counters_never_go_back(self) -> None:
        for row in self._jobs():
            last = self.seen.get(row["id"])
            if last is not None:
                if last["status"] == "completed":
                    assert row["status"] == "completed", f"completed job {row['id']} moved: {row}"
                assert row["attempt"] >= last["attempt"], (last, row)
                assert row["retry_count"] >= last["retry_count"], (last, row)
            self.seen[row["id"]] = row

    @invariant()
    def terminal_and_queue_rows_are_consistent(self) -> None:
        for row in self._jobs():
            if row["status"] in TERMINAL:
                assert row["completed_at"] is not None, f"{row['status']} job without completed_at"
            expected_queue = "queued" if row["status"] in WAITING else row["status"]
            assert row["queue_statuses"] == [expected_queue], (row["id"], row["status"],
                                                               row["queue_statuses"])

    @invariant()
    def one_owner_one_slot(self) -> None:
        slots = self._query("SELECT host, category, slot, job_id, job_attempt, worker_id"
                            "  FROM worker_slots WHERE job_id IS NOT NULL")
        jobs = {r["id"]: r for r in self._query(
            "SELECT id, status, attempt, worker_id FROM workflow_jobs")}
        held_by: dict[int, list[db.Row]] = {}
        for slot in slots:
            held_by.setdefault(slot["job_id"], []).append(slot)
            job = jobs.get(slot["job_id"])
            assert job is not None and job["status"] == "processing" \
                and job["attempt"] == slot["job_attempt"], (
                    f"slot {slot} is held for a job that is not running under that attempt: {job}")
            assert slot["worker_id"] == job["worker_id"], (slot, job)
        for job in jobs.values():
            if job["status"] == "processing":
                assert job["worker_id"] is not None, job
                assert len(held_by.get(job["id"], [])) == 1, (
                    f"running job {job} holds slots {held_by.get(job['id'])}")
            elif job["status"] in WAITING:
                assert job["id"] not in held_by, f"waiting job {job} holds a slot"
        per_host: dict[str, int] = {}
        for slot in slots:
            per_host[slot["host"]] = per_host.get(slot["host"], 0) + 1
        assert all(n <= CPU_LIMIT for n in per_host.values()), per_host

    @invariant()
    def running_steps_belong_to_the_owner(self) -> None:
        rows = self._query(
            "SELECT se.id, se.job_id, se.job_attempt, se.worker_id, j.status, j.attempt,"
            "       j.worker_id AS owner"
            "  FROM step_executions se JOIN workflow_jobs j ON j.id = se.job_id"
            " WHERE se.status = 'running'")
        per_job: dict[int, int] = {}
        for row in rows:
            per_job[row["job_id"]] = per_job.get(row["job_id"], 0) + 1
            assert (row["status"], row["attempt"], row["owner"]) == (
                "processing", row["job_attempt"], row["worker_id"]), (
                    f"step execution still running outside its attempt: {row}")
        assert all(n == 1 for n in per_job.values()), per_job

    @invariant()
    def operator_requests_end_with_their_attempt(self) -> None:
        """A cancel or pause request is addressed to the running attempt: once the job stops
        running, the request must have been honoured or dropped, never carried over."""
        if not self.check_operator_requests:
            return
        for row in self._jobs():
            if row["status"] != "processing":
                assert not row["cancel_requested"] and not row["pause_requested"], (
                    f"job {row['id']} is {row['status']} yet still carries"
                    f" cancel_requested={row['cancel_requested']},"
                    f" pause_requested={row['pause_requested']}")


# -- the tests -----------------------------------------------------------------------------


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


def test_job_lifecycle_state_machine(rig: Rig) -> None:
    machine = type("JobLifecycleOnRig", (JobLifecycle,), {"rig": rig})
    run_state_machine_as_test(machine, settings=RUN_SETTINGS)


def test_operator_requests_do_not_outlive_the_attempt(rig: Rig) -> None:
    """The same machine, also checking that cancel/pause requests end with the attempt."""
    machine = type("JobLifecycleWithRequests", (JobLifecycle,),
                   {"rig": rig, "check_operator_requests": True})
    run_state_machine_as_test(machine, settings=RUN_SETTINGS)

