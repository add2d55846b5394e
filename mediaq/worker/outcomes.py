"""What an attempt came to, as values: the executor decides, the completer writes.

A step attempt ends in one of the *step outcomes*, a job attempt (one claim) in one of
the *job outcomes*. Each is a frozen value of its own type, so the completer
(``mediaq.worker.completer``) turns it into its statement with one ``match``, and a test
can check a decision without a database. The functions at the end are the executor's
rules, free of I/O: an action's exception -> its failure class, a failure -> retry,
continue or give up, a stop request -> what becomes of the job.

RetryScheduled is both: the step's execution closes and the job waits out its back-off
in the same commit, and the attempt ends there.
"""

from __future__ import annotations

import errno
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import psycopg

from mediaq.backoff import retry_delay
from mediaq.errors import (
    Cancelled,
    JobTimedOut,
    LeaseLost,
    PermanentError,
    StepFailed,
    StepTimedOut,
    TransientError,
)
from mediaq.states import JobStatus

if TYPE_CHECKING:
    from mediaq.worker.job_run import Step
    from mediaq.worker.publications import Publication


class NamedStep(Protocol):
    """What a log line needs of a step (``job_run.Step`` is one)."""

    @property
    def number(self) -> int: ...

    @property
    def name(self) -> str: ...


class ErrorClass(StrEnum):
    """``error_class`` as a worker writes it, on a step execution or on the job."""

    PERMANENT = "permanent"
    """Retrying cannot help (bad input or parameters, an action's bug, the job's timeout)."""
    TRANSIENT = "transient"
    """The step may succeed later (a busy dependency, a step timeout, a full disk)."""
    EXHAUSTED = "exhausted"
    """A step's transient failure after the job's last retry (the job fails 'transient')."""
    CANCELLED = "cancelled"
    """A step stopped by a cancel, a pause or a drain."""
    FUSED = "fused"
    """A one-pass run of several steps failed; each step then runs on its own."""


# -- job outcomes: how one attempt (one claim) of the job ended ---------------------------
#
# ``status`` is the state the outcome's statement moves the job to (None: nothing is
# written, the job is not ours). A retry or a hand-back goes through the database's
# after_attempt(), which honours a cancel or pause an operator asked for meanwhile.


@dataclass(frozen=True)
class JobCompleted:
    """Every step ran (those with ``on_failure: continue`` may have failed): job_complete."""

    status: ClassVar[JobStatus | None] = JobStatus.COMPLETED
    outputs: tuple[dict[str, Any], ...]
    failed_steps: tuple[dict[str, Any], ...]
    workflow_code: str
    workflow_version: int

    @property
    def output_file_path(self) -> str | None:
        """The job's output file: the last primary output, else its first rendition
        (a transcode ladder's top rung)."""
        for role, ordered in (("primary", reversed(self.outputs)), ("rendition", self.outputs)):
            for output in ordered:
                if output.get("role") == role:
                    return str(output["path"])
        return None

    @property
    def metadata(self) -> dict[str, Any]:
        return {"outputs": list(self.outputs), "failed_steps": list(self.failed_steps),
                "workflow_code": self.workflow_code, "workflow_version": self.workflow_version}

    @property
    def summary(self) -> str:
        summary = f"Completed successfully: {len(self.outputs)} output(s)"
        if self.failed_steps:
            summary += f", {len(self.failed_steps)} step(s) failed and were skipped"
        return summary


@dataclass(frozen=True)
class JobFailed:
    """A dead letter until an operator retries it: job_fail."""

    status: ClassVar[JobStatus | None] = JobStatus.FAILED
    error_class: ErrorClass
    message: str


@dataclass(frozen=True)
class RetryScheduled:
    """A transient failure with retries left: the step's execution closes as failed and the
    job waits out its back-off (job_schedule_retry) in one commit; the next attempt resumes
    at this step. Also a step outcome."""

    status: ClassVar[JobStatus | None] = JobStatus.PENDING
    advances: ClassVar[bool] = False
    delay_seconds: float
    error: str
    retry: int  # the retry this books: 1 for the first
    max_retries: int


@dataclass(frozen=True)
class JobCancelled:
    """An operator's cancel, seen by the worker: job_cancelled."""

    status: ClassVar[JobStatus | None] = JobStatus.CANCELLED


@dataclass(frozen=True)
class HandedBack:
    """A pause, or the worker draining: job_hand_back, no retry spent (the next attempt
    resumes at the first unfinished step)."""

    status: ClassVar[JobStatus | None] = JobStatus.PENDING


@dataclass(frozen=True)
class AttemptLost:
    """Another worker owns the job now (a fenced write touched no row): write nothing."""

    status: ClassVar[JobStatus | None] = None


@dataclass(frozen=True)
class Abandoned:
    """The database failed under a write: ownership is unknown, so write nothing and let
    the lease decide (it runs out and a rescuer hands the job on)."""

    status: ClassVar[JobStatus | None] = None
    error: str


@dataclass(frozen=True)
class TaskDone:
    """The task committed (its step or item done, skipped, or its items made) and the
    job goes on with its other tasks: nothing more to write."""

    status: ClassVar[JobStatus | None] = JobStatus.PROCESSING


# -- step outcomes: how one execution of one step ended -----------------------------------
#
# ``advances``: whether the job's progress counts the step as done when it closes.


@dataclass(frozen=True)
class StepCompleted:
    """The action succeeded: close the execution, recording what it publishes (moved
    into place after the commit). The workflow's last step also completes the job
    (``completes``) in the same commit: one commit (one WAL flush, one wake-up of the
    triggers) less per job."""

    advances: ClassVar[bool] = True
    output_data: dict[str, Any]
    publications: tuple[Publication, ...] = ()
    completes: JobCompleted | None = None


@dataclass(frozen=True)
class ContinueAfterFailure:
    """The step failed for good, but its workflow says ``on_failure: continue``."""

    advances: ClassVar[bool] = True
    error_class: ErrorClass
    error: str


@dataclass(frozen=True)
class StepGaveUp:
    """The step failed for good (permanent, or retries exhausted): the execution closes,
    then the job fails with ``job`` in a commit of its own."""

    advances: ClassVar[bool] = False
    error_class: ErrorClass
    error: str
    job: JobFailed


@dataclass(frozen=True)
class StepInterrupted:
    """A stop request reached the running step: close it as cancelled and (``moves_job``)
    move the job on as the request asks, in one commit. The other steps of a one-pass run
    close without moving the job: their first step does that."""

    advances: ClassVar[bool] = False
    stop: JobCancelled | HandedBack
    moves_job: bool = True


@dataclass(frozen=True)
class FusedPassFailed:
    """A one-pass run of several steps failed: close each execution as cancelled; the
    steps then run one by one, each with its own retry and failure rules."""

    advances: ClassVar[bool] = False
    error: str


JobOutcome = (JobCompleted | JobFailed | RetryScheduled | JobCancelled | HandedBack
              | AttemptLost | Abandoned | TaskDone)
StepOutcome = (StepCompleted | RetryScheduled | ContinueAfterFailure | StepGaveUp
               | StepInterrupted | FusedPassFailed)


# -- the executor's rules ------------------------------------------------------------------


def classify(exc: Exception, step: Step, *, past_job_deadline: bool,
             timeout_minutes: object) -> StepFailed:
    """What an exception raised by a step's action means: a permanent or transient failure.

    Interrupts (stop requests) and database errors are not the step's failure and never
    reach here (``Executor._classified`` passes them on).
    """
    if isinstance(exc, StepTimedOut):
        if past_job_deadline:  # the step's deadline is capped by the job's
            timed_out = JobTimedOut(
                f"job ran past its workflow timeout (timeout_minutes = {timeout_minutes})")
            return StepFailed(ErrorClass.PERMANENT, timed_out.message)
        return StepFailed(ErrorClass.TRANSIENT,
                          f"step '{step.name}' ran past its timeout of {step.timeout_seconds} s")
    if isinstance(exc, PermanentError):
        return StepFailed(ErrorClass.PERMANENT, exc.message)
    if isinstance(exc, TransientError):
        return StepFailed(ErrorClass.TRANSIENT, exc.message)
    if isinstance(exc, MemoryError):
        return StepFailed(ErrorClass.TRANSIENT, "out of memory")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # The disk fills, and frees again: worth another attempt whatever the step.
        return StepFailed(ErrorClass.TRANSIENT, f"no space left on the device: {exc}")
    # An action's bug or an unforeseen library error: `retry` steps give it another
    # chance, others fail at once.
    error_class = ErrorClass.TRANSIENT if step.on_failure == "retry" else ErrorClass.PERMANENT
    return StepFailed(error_class, f"{type(exc).__name__}: {exc}")


def after_failure(
    failure: StepFailed, step: Step, *, retries_used: int, max_retries: int,
    retry_base_seconds: float, retry_max_seconds: float, rng: random.Random | None = None,
) -> RetryScheduled | ContinueAfterFailure | StepGaveUp:
    """What a classified step failure does to the job."""
    if failure.error_class == ErrorClass.TRANSIENT and retries_used < max_retries:
        delay = retry_delay(retries_used, retry_base_seconds, retry_max_seconds, rng)
        return RetryScheduled(delay_seconds=delay, error=failure.message,
                              retry=retries_used + 1, max_retries=max_retries)
    exhausted = failure.error_class != ErrorClass.PERMANENT
    step_class = ErrorClass.EXHAUSTED if exhausted else ErrorClass.PERMANENT
    if step.on_failure == "continue":
        return ContinueAfterFailure(step_class, failure.message)
    message = failed_line(step, failure.message)
    if exhausted:
        message += f" (after {retries_used} retries)"
    # The job keeps the failure's own class: 'transient' says that retrying it may work.
    job_class = ErrorClass.TRANSIENT if exhausted else ErrorClass.PERMANENT
    return StepGaveUp(step_class, failure.message, JobFailed(job_class, message))


def stop_outcome(signal: BaseException) -> JobCancelled | HandedBack | AttemptLost:
    """What a stop request (the StopSignal's reason, or an Interrupt) makes of the job."""
    if isinstance(signal, LeaseLost):
        return AttemptLost()
    if isinstance(signal, Cancelled):
        return JobCancelled()
    return HandedBack()  # Paused: an operator's pause, or the worker draining


def unstorable_reason(exc: BaseException) -> str | None:
    """Why the database refused a write *because of the data written* (a value a JSONB
    or text column cannot hold, a value out of range, a limit exceeded), as one line;
    None for anything else.

    A refusal for the data is permanent: writing the same result again fails the same
    way, so the step fails for good (``Executor``) instead of the attempt being
    abandoned. Anything else (psycopg.OperationalError: a lost connection, a server
    shutting down, a pool timeout) leaves ownership unknown and stays ``Abandoned``:
    the lease decides, as after any outage.
    """
    if isinstance(exc, UnicodeEncodeError):  # psycopg encodes text before sending it
        return f"text that cannot be encoded as UTF-8 ({exc.reason})"
    refused = isinstance(exc, psycopg.DataError) or (
        # class 54 (program limit exceeded: a value too large, too deep): the data's
        isinstance(exc, psycopg.DatabaseError) and (exc.sqlstate or "").startswith("54"))
    if not refused:
        return None
    lines = str(exc).strip().splitlines()
    reason = lines[0] if lines and lines[0] else type(exc).__name__
    if isinstance(exc, psycopg.DatabaseError) and exc.diag.message_detail:
        reason += f" ({exc.diag.message_detail.strip().splitlines()[0]})"
    return reason


def cannot_store(file_name: str, reason: str, what: str = "the step's result") -> str:
    """The one-line failure for a result the database refused (``unstorable_reason``)."""
    return f"{file_name}: {what} cannot be stored: {reason}"


def failed_line(step: NamedStep, error: str) -> str:
    """How a step's failure reads in the job log and in the job's error message."""
    return f"step {step.number} '{step.name}' failed: {error}"
