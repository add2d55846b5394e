"""The executor's decisions as values, without a database (the fast tier).

Three layers: the pure rules of ``mediaq.worker.outcomes`` (an exception -> its class, a
failure -> retry, continue or give up, a stop request -> the job's outcome); the
completer's one mapping from outcome to named, fenced statement; and ``Executor.run``
over a recording handle, which asserts the outcome it returns and the writes it asks for.
The same paths run against real PostgreSQL and worker processes in test_lifecycle.py,
test_state_machine.py and the chaos suite.
"""

from __future__ import annotations

import dataclasses
import errno
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mediaq import actions
from mediaq.actions import ActionResult
from mediaq.config import Settings
from mediaq.errors import (
    Cancelled,
    InputRefused,
    LeaseLost,
    Paused,
    PermanentError,
    StepFailed,
    StepTimedOut,
    TransientError,
)
from mediaq.queries import SQL_DIR, queries
from mediaq.states import JobStatus, StepStatus
from mediaq.worker import completer, executor
from mediaq.worker.executor import Executor
from mediaq.worker.job_handle import JobHandle, Settle, StopSignal
from mediaq.worker.job_run import JobRun, Step
from mediaq.worker.outcomes import (
    Abandoned,
    AttemptLost,
    ContinueAfterFailure,
    ErrorClass,
    FusedPassFailed,
    HandedBack,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobOutcome,
    RetryScheduled,
    StepCompleted,
    StepGaveUp,
    StepInterrupted,
    TaskDone,
    after_failure,
    classify,
    stop_outcome,
)

BASE, CAP = 5.0, 3600.0


def a_step(on_failure: str = "stop", number: int = 1, action: str = "noop",
           **parameters: Any) -> Step:
    return Step(id=number, number=number, name=f"{action} {number}", action=action,
                parameters=parameters, timeout_seconds=5, on_failure=on_failure)


def decide(exc: Exception, *, on_failure: str = "stop", retries_used: int = 0,
           max_retries: int = 3, past_job_deadline: bool = False) -> Any:
    step = a_step(on_failure)
    failure = classify(exc, step, past_job_deadline=past_job_deadline, timeout_minutes=60)
    return after_failure(failure, step, retries_used=retries_used, max_retries=max_retries,
                         retry_base_seconds=BASE, retry_max_seconds=CAP,
                         rng=random.Random(7))


# -- the rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(("exc", "on_failure", "error_class"), [
    (PermanentError("bad input"), "stop", ErrorClass.PERMANENT),
    (InputRefused("outside the roots"), "retry", ErrorClass.PERMANENT),
    (TransientError("busy"), "stop", ErrorClass.TRANSIENT),
    (StepTimedOut("slow"), "stop", ErrorClass.TRANSIENT),
    (MemoryError(), "stop", ErrorClass.TRANSIENT),
    (OSError(errno.ENOSPC, "No space left on device"), "stop", ErrorClass.TRANSIENT),
    (OSError(errno.EACCES, "Permission denied"), "stop", ErrorClass.PERMANENT),
    (RuntimeError("a bug"), "stop", ErrorClass.PERMANENT),
    (RuntimeError("a bug"), "retry", ErrorClass.TRANSIENT),  # `retry` steps get a chance
])
def test_an_exception_is_classified(exc: Exception, on_failure: str,
                                    error_class: ErrorClass) -> None:
    failure = classify(exc, a_step(on_failure), past_job_deadline=False, timeout_minutes=60)
    assert isinstance(failure, StepFailed) and failure.error_class == error_class


def test_a_step_timeout_past_the_jobs_deadline_fails_the_job_for_good() -> None:
    step = a_step()
    own = classify(StepTimedOut("slow"), step, past_job_deadline=False, timeout_minutes=60)
    assert own.message == "step 'noop 1' ran past its timeout of 5 s"
    job = classify(StepTimedOut("slow"), step, past_job_deadline=True, timeout_minutes=60)
    assert job.error_class == ErrorClass.PERMANENT
    assert job.message == "job ran past its workflow timeout (timeout_minutes = 60)"


def test_a_permanent_error_fails_the_job_without_a_retry() -> None:
    outcome = decide(PermanentError("bad input"), retries_used=0, max_retries=5)
    assert outcome == StepGaveUp(ErrorClass.PERMANENT, "bad input",
                                 JobFailed(ErrorClass.PERMANENT,
                                           "step 1 'noop 1' failed: bad input"))
    assert outcome.job.status is JobStatus.FAILED


@pytest.mark.parametrize("retries_used", [0, 1, 2, 9])
def test_a_transient_error_with_retries_left_schedules_a_retry_with_backoff(
    retries_used: int,
) -> None:
    outcome = decide(TransientError("busy"), retries_used=retries_used, max_retries=10)
    assert isinstance(outcome, RetryScheduled)
    assert (outcome.error, outcome.retry, outcome.max_retries) == ("busy", retries_used + 1, 10)
    ceiling = min(CAP, BASE * 2 ** retries_used)
    assert ceiling / 2 <= outcome.delay_seconds <= ceiling  # full jitter on the upper half
    assert outcome.status is JobStatus.PENDING and not outcome.advances


def test_a_transient_error_after_the_last_retry_fails_the_job_as_transient() -> None:
    outcome = decide(TransientError("busy"), retries_used=3, max_retries=3)
    assert outcome == StepGaveUp(
        ErrorClass.EXHAUSTED, "busy",
        JobFailed(ErrorClass.TRANSIENT, "step 1 'noop 1' failed: busy (after 3 retries)"))


def test_on_failure_continue_goes_on_once_the_step_has_failed_for_good() -> None:
    assert decide(PermanentError("x"), on_failure="continue") \
        == ContinueAfterFailure(ErrorClass.PERMANENT, "x")
    assert decide(TransientError("x"), on_failure="continue", retries_used=2, max_retries=2) \
        == ContinueAfterFailure(ErrorClass.EXHAUSTED, "x")
    # A transient failure is retried first, continue or not.
    assert isinstance(decide(TransientError("x"), on_failure="continue"), RetryScheduled)
    assert ContinueAfterFailure.advances and not StepGaveUp.advances


@pytest.mark.parametrize(("signal", "outcome"), [
    (Cancelled(), JobCancelled()),
    (Paused(), HandedBack()),
    (Paused("worker shutting down"), HandedBack()),
    (LeaseLost("elsewhere"), AttemptLost()),
])
def test_a_stop_request_decides_the_jobs_outcome(signal: BaseException,
                                                 outcome: JobOutcome) -> None:
    assert stop_outcome(signal) == outcome


def test_the_completion_names_the_jobs_output_and_the_skipped_steps() -> None:
    done = JobCompleted(
        outputs=({"path": "/o/a.mp4", "role": "rendition"}, {"path": "/o/b.mp4", "role":
                 "rendition"}, {"path": "/o/t.jpg", "role": "thumbnail"}),
        failed_steps=({"step": 2, "name": "x"},), workflow_code="W", workflow_version=3)
    assert done.output_file_path == "/o/a.mp4"  # no primary: the ladder's top rung
    assert done.summary == "Completed successfully: 3 output(s), 1 step(s) failed and were skipped"
    assert done.metadata["workflow_version"] == 3 and len(done.metadata["outputs"]) == 3
    primaries = JobCompleted(({"path": "/1", "role": "primary"}, {"path": "/2", "role":
                              "primary"}), (), "W", 1)
    assert primaries.output_file_path == "/2"


def test_outcomes_are_frozen_values() -> None:
    outcome = JobFailed(ErrorClass.PERMANENT, "m")
    with pytest.raises(AttributeError):
        outcome.message = "other"  # type: ignore[misc]
    assert outcome == JobFailed(ErrorClass.PERMANENT, "m") and hash(outcome)


def test_step_status_mirrors_the_check_on_step_executions() -> None:
    schema = (SQL_DIR / "schema.sql").read_text()
    table = schema[schema.index("CREATE TABLE step_executions"):]
    listed = re.search(r"CHECK \(status IN \(([^)]*)\)\)", table)
    assert listed is not None
    assert {s.strip(" '") for s in listed.group(1).split(",")} == {s.value for s in StepStatus}


# -- the completer: outcome -> its one fenced statement --------------------------------------

JOB_OUTCOMES: list[tuple[JobOutcome, str | None]] = [
    (JobCompleted((), (), "W", 1), "job_complete"),
    (JobFailed(ErrorClass.PERMANENT, "m"), "job_fail"),
    (RetryScheduled(1.5, "m", 1, 3), "job_schedule_retry"),
    (JobCancelled(), "job_cancelled"),
    (HandedBack(), "job_hand_back"),
    (AttemptLost(), None),
    (Abandoned("connection lost"), None),
    (TaskDone(), None),  # the job goes on with its other tasks
]


@pytest.mark.parametrize(("outcome", "name"), JOB_OUTCOMES)
def test_each_job_outcome_has_one_fenced_statement(outcome: JobOutcome, name: str | None) -> None:
    statement = completer.job_statement(outcome)
    if name is None:
        assert statement is None
        return
    assert statement is not None and statement[0] == name
    text = queries[name]
    # The fence is the task's: the tasks this worker runs, at their attempts.
    assert "task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)" in text, \
        f"{name} is unfenced"
    assert "WHERE id = %(job_id)s AND status = 'processing'" in text
    # The statement's parameters are exactly what the outcome supplies, plus the fence.
    fence = set(JobHandle(None, "w", 1, "J", 1, "cpu").fence)  # type: ignore[arg-type]
    wanted = set(re.findall(r"%\((\w+)\)s", text)) - fence
    assert set(statement[1]) == wanted
    assert outcome.status is None or outcome.status in JobStatus


def test_every_job_outcome_type_is_mapped() -> None:
    assert {type(o) for o, _ in JOB_OUTCOMES} == set(JobOutcome.__args__)


@dataclass
class Recorder:
    """A JobHandle that records the writes asked of it instead of making them; a write
    named in ``refuse`` raises as a fenced write that touched no row would.

    It stands for the job's tasks too (one per step, ``claim`` hands it the next): a
    step's commit that settles the job's last task completes the job in the same commit,
    built from the executions it recorded, as ``JobHandle._settle`` does under the lock."""

    job_code: str = "JOB-T-1"
    job_id: int = 1
    worker_id: str = "w1"
    attempt: int = 1
    category: str = "cpu"
    pool: Any = None
    stop_signal: StopSignal = field(default_factory=StopSignal)
    writes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refuse: dict[str, BaseException] = field(default_factory=dict)
    on_progress: Any = None
    task_ids: list[int] = field(default_factory=list)
    task_attempts: list[int] = field(default_factory=list)
    tasks: dict[tuple[int, int | None], int] = field(default_factory=dict)
    ended_job: Any = None
    run_cache: Any = None
    publications_left: bool = False
    settle_after_publication: Any = None
    task_count: int = 1
    settled: dict[int, str] = field(default_factory=dict)  # task id -> its state
    started: dict[int, dict[str, Any]] = field(default_factory=dict)  # execution id
    history: dict[tuple[int, int | None], dict[str, Any]] = field(default_factory=dict)

    def claim(self, step: Step) -> None:
        """The step's task is this handle's (a task's id is its step's id here)."""
        self.task_ids[:], self.task_attempts[:] = [step.id], [1]
        self.tasks.clear()
        self.add_task(step.id, 1, step.id, None)
        self.ended_job = self.run_cache = None  # each task loads the job afresh

    def add_task(self, task_id: int, attempt: int, step_id: int, item_index: int | None) -> None:
        self.task_ids.append(task_id)
        self.task_attempts.append(attempt)
        self.tasks[(step_id, item_index)] = task_id

    def _write(self, name: str, params: dict[str, Any]) -> None:
        assert name in queries, name
        if name in self.refuse:
            raise self.refuse[name]
        self.writes.append((name, params))

    def record_input_bytes(self, size: int) -> None:
        self._write("job_input_bytes", {"input_bytes": size})

    def log(self, message: str) -> None:
        self._write("job_append_log", {"message": message})

    def progress(self, percent: float, stage: str | None, *, force: bool = False,
                 fraction: float | None = None) -> None:
        self._write("job_progress", {"progress_percent": percent, "stage": stage})
        if self.on_progress is not None:
            self.on_progress(self)

    def start_step(self, **params: Any) -> int:
        self._write("step_start", params)
        self.started[len(self.writes)] = params
        return len(self.writes)

    def commit_step(self, execution_id: int, *, settle: Settle | None = None,
                    **params: Any) -> list[int]:
        then = params.get("then")
        if settle is not None:
            self.settled[settle.task_id] = settle.state
            started = self.started[execution_id]
            self.history[(started["step_id"], started.get("item_index"))] = {
                "step_id": started["step_id"], "item_index": started.get("item_index"),
                "completed": params["status"] == StepStatus.COMPLETED, "skipped": False,
                "given_up": params["status"] == StepStatus.FAILED, "executions": 1,
                "output_data": params.get("output_data"),
                "error_message": params.get("error_message")}
            if len(self.settled) == self.task_count:  # the job's last task
                then = settle.completion(self)  # type: ignore[arg-type]
        self._write("step_finish", {"execution_id": execution_id, **params, "then": then,
                                    "settle": settle.state if settle else None})
        return list(range(1, len(params.get("publications", ())) + 1))

    def execute(self, query: str, params: Any = None) -> Any:
        """The database's side of the job's completion: its steps' committed history."""
        assert query == queries["step_history_of_job"]
        return self

    def fetchall(self) -> list[dict[str, Any]]:
        return list(self.history.values())

    def settle_alone(self, settle: Settle, log_message: str) -> None:
        raise AssertionError("no earlier attempt finished a step here")

    def expand(self, task_id: int, items: list[dict[str, Any]], log_message: str) -> None:
        raise AssertionError("no fan-out here")

    def claim_siblings(self, step_numbers: list[int], group_numbers: list[int],
                       lease_seconds: int) -> list[dict[str, Any]]:
        """No other worker is idle: every sibling's task is this pass's."""
        return [{"step_number": n, "task_id": n, "task_attempt": 1} for n in step_numbers]

    def finish(self, name: str, **params: Any) -> None:
        self._write(name, params)

    @property
    def names(self) -> list[str]:
        """The writes, a step's close shown with the job statement it carries."""
        shown = []
        for name, params in self.writes:
            if name in ("job_progress", "job_append_log", "job_input_bytes"):
                continue
            if name == "step_finish":
                then = params["then"][0] if params["then"] else None
                name = f"step_finish:{params['status']}" + (f"+{then}" if then else "")
            shown.append(name)
        return shown


@pytest.mark.parametrize(("outcome", "status", "error_class", "then"), [
    (StepCompleted({"outputs": []}, (), JobCompleted((), (), "W", 1)),
     StepStatus.COMPLETED, None, "job_complete"),
    (StepCompleted({"outputs": []}, ()), StepStatus.COMPLETED, None, None),
    (RetryScheduled(2.0, "busy", 1, 3), StepStatus.FAILED, "transient", "job_schedule_retry"),
    (ContinueAfterFailure(ErrorClass.PERMANENT, "x"), StepStatus.FAILED, "permanent", None),
    (StepGaveUp(ErrorClass.EXHAUSTED, "x", JobFailed(ErrorClass.TRANSIENT, "m")),
     StepStatus.FAILED, "exhausted", None),  # the job's failure is its own commit
    (StepInterrupted(JobCancelled()), StepStatus.CANCELLED, "cancelled", "job_cancelled"),
    (StepInterrupted(HandedBack()), StepStatus.CANCELLED, "cancelled", "job_hand_back"),
    (StepInterrupted(HandedBack(), moves_job=False), StepStatus.CANCELLED, "cancelled", None),
    (FusedPassFailed("decoder died"), StepStatus.CANCELLED, "fused", None),
])
def test_each_step_outcome_closes_its_execution_in_one_commit(
    outcome: Any, status: StepStatus, error_class: str | None, then: str | None,
) -> None:
    handle = Recorder()
    completer.close_step(handle, 7, a_step(), outcome, 50.0)  # type: ignore[arg-type]
    [(name, params)] = handle.writes
    assert (name, params["execution_id"], params["status"]) == ("step_finish", 7, status)
    assert params["error_class"] == error_class
    assert (params["then"][0] if params["then"] else None) == then
    assert params["progress_percent"] == 50.0 and params["log_message"].lower().startswith("step 1")


# -- the executor over a recording handle ------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # No database behind the recording handle: the action breakers (which read theirs)
    # are off, as in every test but tests/test_breakers.py.
    settings = Settings().replace(home=tmp_path, action_breaker_threshold=0)
    settings.storage.effective_input_roots[0].mkdir(parents=True)
    return settings


def run_job(settings: Settings, monkeypatch: pytest.MonkeyPatch, *steps: Step,
            handle: Recorder | None = None, retry_count: int = 0, max_retries: int = 3,
            input_path: Path | None = None) -> tuple[JobOutcome, Recorder]:
    """Run a job of ``steps`` through ``Executor.run``, one task (one step) at a time as
    one worker's run-ahead claims them, its database reads replaced; the last outcome."""
    if input_path is None:
        input_path = settings.storage.effective_input_roots[0] / "in.bin"
        input_path.write_bytes(b"media")
    handle = handle or Recorder()
    handle.task_count = len(steps)

    def load_run(handle: Recorder, workflow_id: int) -> JobRun:
        run = JobRun(context={
            "input_file_path": str(input_path), "input_bytes": None, "params": {},
            "workflow_code": "W", "workflow_version": 1, "retry_count": retry_count,
            "max_retries": max_retries, "timeout_minutes": 60,
        }, steps=list(steps), history=dict(handle.history))
        run.job_deadline = time.monotonic() + 3600
        return run

    monkeypatch.setattr(executor, "load_run", load_run)
    worker = Executor(settings)
    outcome: JobOutcome = TaskDone()
    for step in steps:
        if step.id in handle.settled:
            continue  # a one-pass run settled it with an earlier step's task
        handle.claim(step)
        outcome = worker.run(handle, 1)  # type: ignore[arg-type]
        if not isinstance(outcome, TaskDone):
            break
    return outcome, handle


def test_the_last_step_completes_the_job_in_its_own_commit(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcome, handle = run_job(settings, monkeypatch, a_step(number=1), a_step(number=2))
    assert isinstance(outcome, JobCompleted) and outcome.status is JobStatus.COMPLETED
    assert handle.names == ["step_start", "step_finish:completed",
                            "step_start", "step_finish:completed+job_complete"]
    # Each step's close settles its task in the same commit.
    assert settled(handle) == ["completed", "completed"]


def settled(handle: Recorder) -> list[str | None]:
    return [p["settle"] for n, p in handle.writes if n == "step_finish"]


def test_a_permanent_failure_fails_the_job_after_closing_the_step(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcome, handle = run_job(settings, monkeypatch,
                              a_step(action="fail", kind="permanent", message="boom"))
    assert outcome == JobFailed(ErrorClass.PERMANENT, "step 1 'fail 1' failed: boom")
    assert handle.names == ["step_start", "step_finish:failed", "job_fail"]
    assert handle.writes[-1][1]["error_class"] == "permanent"
    assert settled(handle) == [None]  # job_fail ends the task with the job


def test_a_transient_failure_schedules_the_retry_with_the_steps_close(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcome, handle = run_job(settings, monkeypatch, a_step(number=1),
                              a_step(number=2, action="fail", kind="transient", message="busy"),
                              retry_count=1, max_retries=3)
    assert isinstance(outcome, RetryScheduled) and outcome.retry == 2
    assert BASE <= outcome.delay_seconds <= 2 * BASE
    assert handle.names == ["step_start", "step_finish:completed",
                            "step_start", "step_finish:failed+job_schedule_retry"]


def test_on_failure_continue_completes_the_job_naming_the_failed_step(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcome, handle = run_job(
        settings, monkeypatch,
        a_step(number=1, on_failure="continue", action="fail", kind="permanent", message="x"),
        a_step(number=2))
    assert isinstance(outcome, JobCompleted)
    assert outcome.failed_steps == ({"step": 1, "name": "fail 1", "error": "x"},)
    assert handle.names == ["step_start", "step_finish:failed",
                            "step_start", "step_finish:completed+job_complete"]
    assert settled(handle) == ["failed", "completed"]  # a continue step's task is done


def test_a_refused_input_fails_the_job_before_any_step(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    outcome, handle = run_job(settings, monkeypatch, a_step(), input_path=tmp_path / "x.bin")
    assert isinstance(outcome, JobFailed) and "outside the input roots" in outcome.message
    assert handle.names == ["job_fail"]


@pytest.mark.parametrize(("signal", "then"), [(Cancelled(), "job_cancelled"),
                                              (Paused(), "job_hand_back")])
def test_a_stop_between_steps_moves_the_job_without_starting_the_next(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, signal: BaseException, then: str,
) -> None:
    handle = Recorder()
    handle.stop_signal.stop(signal)
    outcome, handle = run_job(settings, monkeypatch, a_step(), handle=handle)
    assert outcome == stop_outcome(signal)
    assert handle.names == [then]


def test_a_cancel_during_a_step_closes_it_and_cancels_the_job_in_one_commit(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The heartbeat sees the cancel while the step runs: the action stops at its next check.
    handle = Recorder(on_progress=lambda h: h.stop_signal.stop(Cancelled()))
    outcome, handle = run_job(settings, monkeypatch, a_step(action="sleep", seconds=0.3),
                              handle=handle)
    assert outcome == JobCancelled() and outcome.status is JobStatus.CANCELLED
    assert handle.names == ["step_start", "step_finish:cancelled+job_cancelled"]


def test_a_lost_lease_writes_nothing_more(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = Recorder(refuse={"step_finish": LeaseLost("elsewhere")})
    outcome, handle = run_job(settings, monkeypatch, a_step(number=1), a_step(number=2),
                              handle=handle)
    assert outcome == AttemptLost() and outcome.status is None
    assert handle.names == ["step_start"]


def test_a_database_error_abandons_the_job_to_its_lease(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = Recorder(refuse={"step_start": psycopg.OperationalError("server closed\nmore")})
    outcome, handle = run_job(settings, monkeypatch, a_step(), handle=handle)
    assert outcome == Abandoned("server closed")
    assert handle.names == []


def test_a_refused_job_fail_is_a_lost_attempt_not_a_failure(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = Recorder(refuse={"job_fail": LeaseLost("elsewhere")})
    outcome, handle = run_job(settings, monkeypatch,
                              a_step(action="fail", kind="permanent", message="boom"),
                              handle=handle)
    assert outcome == AttemptLost()
    assert handle.names == ["step_start", "step_finish:failed"]


def test_a_stop_whose_close_is_refused_is_a_lost_attempt(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = Recorder(on_progress=lambda h: h.stop_signal.stop(Paused()),
                      refuse={"step_finish": LeaseLost("elsewhere")})
    outcome, handle = run_job(settings, monkeypatch, a_step(action="sleep", seconds=0.3),
                              handle=handle)
    assert outcome == AttemptLost()
    assert handle.names == ["step_start"]


def fusable(monkeypatch: pytest.MonkeyPatch, fuse: Any) -> str:
    """A test action with a one-pass form ``fuse``, registered for this test only."""
    actions.get_action("noop")  # load the built-ins first: they never replace ours
    actions.action("t_fusable", {"properties": {}})(lambda ctx: ActionResult())
    entry = actions._registry.pop("t_fusable")
    monkeypatch.setitem(actions._registry, "t_fusable", dataclasses.replace(entry, fuse=fuse))
    return "t_fusable"


def test_a_failed_one_pass_run_closes_its_steps_and_runs_them_one_by_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(contexts: list[Any]) -> list[Any]:
        raise TransientError("decoder died")

    name = fusable(monkeypatch, fail)
    outcome, handle = run_job(settings, monkeypatch, a_step(number=1, action=name),
                              a_step(number=2, action=name))
    assert isinstance(outcome, JobCompleted)
    assert handle.names == ["step_start", "step_start",
                            "step_finish:cancelled", "step_finish:cancelled",
                            "step_start", "step_finish:completed",
                            "step_start", "step_finish:completed+job_complete"]
    assert [p["error_class"] for n, p in handle.writes if n == "step_finish"][:2] \
        == ["fused", "fused"]


def test_a_cancel_during_a_one_pass_run_moves_the_job_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def cancelled(contexts: list[Any]) -> list[Any]:
        raise Cancelled()

    name = fusable(monkeypatch, cancelled)
    outcome, handle = run_job(settings, monkeypatch, a_step(number=1, action=name),
                              a_step(number=2, action=name), a_step(number=3, action=name))
    assert outcome == JobCancelled()
    # The other steps close first, without moving the job; the first step's close does.
    assert handle.names == ["step_start"] * 3 + ["step_finish:cancelled"] * 2 \
        + ["step_finish:cancelled+job_cancelled"]
