"""Write what an attempt came to: each outcome through its one fenced statement.

The executor decides (``mediaq.worker.outcomes``); this module is the one place that
knows which named statement of mediaq/sql/queries.sql records which outcome, and what
the job log says about it. The writes go through ``JobHandle``, so every one carries the
fence (worker, attempt) and a refused one raises LeaseLost.
"""

from __future__ import annotations

from typing import Any, assert_never

from psycopg.types.json import Jsonb

from mediaq.logs import log_line
from mediaq.states import StepStatus
from mediaq.worker.job_handle import JobHandle, Settle
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
    NamedStep,
    RetryScheduled,
    StepCompleted,
    StepGaveUp,
    StepInterrupted,
    StepOutcome,
    TaskDone,
    failed_line,
)
from mediaq.worker.publications import Publication


def job_statement(outcome: JobOutcome) -> tuple[str, dict[str, Any]] | None:
    """The fenced statement (name, parameters less the fence) that records ``outcome``
    on the job row; None when nothing may be written."""
    match outcome:
        case JobCompleted():
            return "job_complete", {"output_metadata": Jsonb(outcome.metadata),
                                    "output_file_path": outcome.output_file_path,
                                    "log_line": log_line(outcome.summary)}
        case JobFailed(error_class=error_class, message=message):
            return "job_fail", {"error_message": message, "error_class": error_class.value,
                                "output_metadata": None,
                                "log_line": log_line(f"FAILED: {message}")}
        case RetryScheduled(delay_seconds=delay, error=error):
            # The step's close logs the retry (the two are written in one commit).
            return "job_schedule_retry", {"delay_seconds": delay, "error_message": error,
                                          "log_line": ""}
        case JobCancelled():
            return "job_cancelled", {"log_line": log_line("--- JOB CANCELLED BY ADMIN ---")}
        case HandedBack():
            return "job_hand_back", {"log_line": log_line("Job handed back by its worker")}
        case AttemptLost() | Abandoned() | TaskDone():
            return None  # the job is not (or may not be) ours: writing is the new owner's
        case _:
            assert_never(outcome)


def finish(handle: JobHandle, outcome: JobOutcome) -> None:
    """Record a job outcome on its own, outside a step's commit."""
    statement = job_statement(outcome)
    if statement is not None:
        name, params = statement
        handle.finish(name, **params)


def close_step(handle: JobHandle, execution_id: int, step: NamedStep, outcome: StepOutcome,
               progress_percent: float, settle: Settle | None = None) -> list[int]:
    """Close a step's execution as ``outcome`` says and, where the outcome moves the job as
    well, write that in the same transaction (``JobHandle.commit_step``); ``settle``: the
    step's task is done (completed, or failed under continue), in the same commit. The
    ids of the publications the commit recorded (``mediaq.worker.publications``)."""
    status, error_class, error = StepStatus.FAILED, None, None
    output_data: dict[str, Any] | None = None
    publications: tuple[Publication, ...] = ()
    then: JobOutcome | None = None
    label = f"Step {step.number} '{step.name}'"
    match outcome:
        case StepCompleted():
            status, output_data = StepStatus.COMPLETED, outcome.output_data
            publications, then = outcome.publications, outcome.completes
            message = f"{label} completed"
        case RetryScheduled():
            error_class, error, then = ErrorClass.TRANSIENT, outcome.error, outcome
            message = (f"{label} failed: {error}; retry {outcome.retry}/{outcome.max_retries}"
                       f" in {outcome.delay_seconds:.1f} s")
        case ContinueAfterFailure():
            error_class, error = outcome.error_class, outcome.error
            message = f"{label} failed: {error}; continuing"
        case StepGaveUp():
            # The job's own failure follows in a commit of its own (Executor._fail).
            error_class, error = outcome.error_class, outcome.error
            message = failed_line(step, error)
        case StepInterrupted():
            status, error_class = StepStatus.CANCELLED, ErrorClass.CANCELLED
            error = ("cancelled by an operator" if isinstance(outcome.stop, JobCancelled)
                     else "handed back")
            then = outcome.stop if outcome.moves_job else None
            message = f"{label} {error}"
        case FusedPassFailed():
            status, error_class = StepStatus.CANCELLED, ErrorClass.FUSED
            error = f"one-pass run failed: {outcome.error}"
            message = (f"{label}: one-pass run failed ({outcome.error}); running the steps"
                       " one by one")
        case _:
            assert_never(outcome)
    return handle.commit_step(
        execution_id, status=status.value, output_data=output_data, error_message=error,
        error_class=error_class.value if error_class is not None else None,
        publications=publications, log_message=message,
        progress_percent=progress_percent,
        then=job_statement(then) if then is not None else None, settle=settle)
