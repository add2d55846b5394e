"""Run one claimed job: its workflow's steps in order, resuming after finished ones.

Reads as a pipeline: load the job → check the input → for each unfinished step:
start (fenced) → run the action (no transaction open) → commit outputs (fenced)
→ finish the job. Every outcome is classified here and only here.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg.types.json import Jsonb

from mediaq import db
from mediaq.actions import ActionContext, ActionResult, get_action
from mediaq.backoff import retry_delay
from mediaq.config import Settings
from mediaq.errors import (
    ActionNotAvailable,
    Cancelled,
    InputRefused,
    JobTimedOut,
    LeaseLost,
    Paused,
    PermanentError,
    StepTimedOut,
    TransientError,
)
from mediaq.logs import log_line
from mediaq.outputs import (
    check_input,
    discard,
    discard_earlier_attempts,
    job_output_dir,
    sha256_of,
    staging_dir,
)
from mediaq.triggers.scan import submit_found_files
from mediaq.worker.isolation import isolation_wanted, run_isolated
from mediaq.worker.job_handle import JobHandle

log = structlog.get_logger("mediaq.executor")
T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    id: int
    number: int
    name: str
    action: str
    parameters: dict[str, Any]
    timeout_seconds: int
    on_failure: str


@dataclass
class JobRun:
    """What one run of a job knows and accumulates."""

    context: db.Row
    steps: list[Step]
    history: dict[int, db.Row]
    input_path: Path | None = None
    source_path: Path | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    failed_steps: list[dict[str, Any]] = field(default_factory=list)
    job_deadline: float = 0.0
    completed: bool = False  # the last step's commit completed the job as well

    def percent(self, step: Step, *, done: bool) -> float:
        """The job's progress at the start (or the end) of ``step``."""
        return 100.0 * (self.steps.index(step) + (1 if done else 0)) / len(self.steps)

    def step_overrides(self, step: Step) -> dict[str, Any]:
        """Per-job parameters for a step, keyed by step number, name or action."""
        params = self.context["params"]
        if not isinstance(params, dict):  # a hand-written INSERT may store anything
            return {}
        merged: dict[str, Any] = {}
        for key in (step.action, step.name, str(step.number)):
            value = params.get(key)
            if isinstance(value, dict):
                merged.update(value)
        return merged


def job_primary_output(outputs: list[dict[str, Any]]) -> str | None:
    """The job's output file: the last primary output, else its first rendition
    (a transcode ladder's top rung)."""
    for role, ordered in (("primary", reversed(outputs)), ("rendition", iter(outputs))):
        for output in ordered:
            if output.get("role") == role:
                return str(output["path"])
    return None


def _keep_earlier_outputs(run: JobRun, step: Step, result: ActionResult) -> None:
    """Rename staged files that would replace another step's output in the job folder
    (a retry of the same step replaces its own, as it should)."""
    taken = {Path(o["path"]).name for o in run.outputs if o.get("step") != step.number}
    for output in result.outputs:
        if output.staging_path.name in taken:
            path = output.staging_path
            renamed = path.with_name(f"{path.stem}_step{step.number}{path.suffix}")
            path.rename(renamed)
            output.staging_path = renamed


class StepFailed(Exception):
    """A step failed; carries its class ('permanent' or 'transient') and message."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message


def _fusable(action_name: str) -> bool:
    try:
        return get_action(action_name).fuse is not None
    except ActionNotAvailable:
        return False


def _input_kind(first_action: str) -> str:
    """What the job's input must be: a folder when the first step scans one."""
    try:
        return get_action(first_action).input_kind
    except ActionNotAvailable:
        return "file"  # the step itself fails with the clear message


def load_run(handle: JobHandle, workflow_id: int) -> JobRun:
    # The job is ours and a workflow version never changes: the reads need no
    # transaction around them (each is its own, with no BEGIN and COMMIT to wait for).
    with handle.pool.connection() as conn:
        context = db.fetch_one(conn, "job_context", {"job_id": handle.job_id})
        step_rows = db.fetch_all(conn, "workflow_steps_of", {"workflow_id": workflow_id})
        history = db.fetch_all(conn, "step_history_of_job", {"job_id": handle.job_id})
    assert context is not None
    steps = [
        Step(
            id=r["id"], number=r["step_number"] or 0,
            name=r["step_name"] or f"step {r['step_number']}",
            action=r["action"] or "", parameters=r["parameters"] or {},
            timeout_seconds=r["timeout_seconds"] or 300, on_failure=r["on_failure"] or "stop",
        )
        for r in step_rows
    ]
    run = JobRun(context=context, steps=steps, history={h["step_id"]: h for h in history})
    run.job_deadline = time.monotonic() + float(context["seconds_left"])
    return run


class Executor:
    """Runs claimed jobs; one instance per worker, called from its job threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def run(self, handle: JobHandle, workflow_id: int) -> str:
        """Run the job to an outcome; returns the job's status as this worker left it."""
        bound = log.bind(worker_id=handle.worker_id, job_id=handle.job_id,
                         job_code=handle.job_code, attempt=handle.attempt)
        try:
            run = load_run(handle, workflow_id)
            discard_earlier_attempts(self.settings.staging, handle.job_code, handle.attempt)
            if not run.steps:
                raise StepFailed("permanent", "the workflow has no steps")
            run.input_path = check_input(run.context["input_file_path"],
                                         self.settings.effective_input_roots,
                                         kind=_input_kind(run.steps[0].action))
            run.source_path = run.input_path
            if run.context["input_bytes"] is None and run.input_path.is_file():
                handle.record_input_bytes(run.input_path.stat().st_size)
            for group in self._step_groups(run):
                if len(group) > 1 and self._run_fused(handle, run, group):
                    continue
                for step in group:
                    self._run_or_skip(handle, run, step)
            if not run.completed:
                self._complete(handle, run)
            bound.info("job:completed")
            return "completed"
        except LeaseLost:
            bound.warning("job:lease_lost")
            return "lost"
        except psycopg.Error as exc:
            # Ownership is unknown until the database answers again: stop, and let the
            # lease decide (it expires and a rescuer hands the job on).
            bound.warning("job:abandoned", error=str(exc).strip().splitlines()[0] if str(exc)
                          else repr(exc))
            return "abandoned"
        except InputRefused as exc:
            self._fail_job(handle, "permanent", exc.message)
            bound.info("job:failed", error=exc.message)
            return "failed"
        except StepFailed as exc:
            if exc.error_class == "retry_scheduled":
                return "pending"
            self._fail_job(handle, exc.error_class, exc.message)
            bound.info("job:failed", error=exc.message)
            return "failed"
        except Cancelled:
            return "cancelled"
        except Paused:
            return "handed_back"

    # -- steps -------------------------------------------------------------------------

    def _run_or_skip(self, handle: JobHandle, run: JobRun, step: Step) -> None:
        past = run.history.get(step.id)
        if past is not None and past["completed"]:
            self._remember_outputs(run, step, past["output_data"] or {})
            return
        if past is not None and past["given_up"] and step.on_failure == "continue":
            run.failed_steps.append({"step": step.number, "name": step.name})
            return
        self._stop_if_asked(handle)
        self._run_step(handle, run, step, retry_attempt=int(past["executions"]) if past else 0)

    def _stop_if_asked(self, handle: JobHandle) -> None:
        signal = handle.stop_signal
        if signal.is_set() and signal.reason is not None:
            self._stop_between_steps(handle, signal.reason)

    # -- fused steps (decode once, encode many) -----------------------------------------

    @staticmethod
    def _step_groups(run: JobRun) -> list[list[Step]]:
        """Consecutive unstarted steps of one fusable action form a group; others stand alone."""
        groups: list[list[Step]] = []
        for step in run.steps:
            previous = groups[-1][-1] if groups else None
            if (previous is not None and previous.action == step.action
                    and _fusable(step.action) and step.id not in run.history
                    and previous.id not in run.history):
                groups[-1].append(step)
            else:
                groups.append([step])
        return groups

    def _run_fused(self, handle: JobHandle, run: JobRun, steps: list[Step]) -> bool:
        """Run ``steps`` in one pass; False if the pass failed. Its executions are then
        closed, and the steps run one by one, each with its own retry and failure rules."""
        assert run.source_path is not None
        self._stop_if_asked(handle)
        first, last = steps[0], steps[-1]
        low, high = run.percent(first, done=False), run.percent(last, done=True)
        executions = [
            handle.start_step(step_id=step.id, step_number=step.number, step_name=step.name,
                              retry_attempt=0, progress_percent=low,
                              input_data={"source": str(run.source_path), "action": step.action,
                                          "fused_steps": [s.number for s in steps]})
            for step in steps
        ]
        stage_dirs = [staging_dir(self.settings.staging, handle.job_code, handle.attempt,
                                  step.number) for step in steps]
        started = time.monotonic()
        label = " + ".join(step.name for step in steps)
        try:
            contexts = [self._context(handle, run, step, stage_dir, 0, lambda f, stage: (
                handle.progress(low + (high - low) * f, stage or label)))
                for step, stage_dir in zip(steps, stage_dirs, strict=True)]
            # The pass does every step's work, so it gets their timeouts together.
            together = time.monotonic() + sum(step.timeout_seconds for step in steps)
            for ctx in contexts:
                ctx.deadline = min(together, run.job_deadline)
            fuse = get_action(first.action).fuse
            assert fuse is not None
            if isolation_wanted(self.settings):
                results = self._classified(first, run, lambda: run_isolated(
                    first.action, contexts, fused=True, settings=self.settings))
            else:
                results = self._classified(first, run, lambda: fuse(contexts))
        except (Cancelled, Paused, LeaseLost) as exc:
            for stage_dir in stage_dirs:
                discard(stage_dir)
            for step, execution_id in zip(steps[1:], executions[1:], strict=True):
                self._close_interrupted(handle, run, step, execution_id, exc, then=False)
            self._close_interrupted(handle, run, first, executions[0], exc)
            raise
        except StepFailed as failure:
            for stage_dir in stage_dirs:
                discard(stage_dir)
            for step, execution_id in zip(steps, executions, strict=True):
                handle.commit_step(
                    execution_id, status="cancelled", error_class="fused",
                    error_message=f"one-pass run failed: {failure.message}",
                    log_message=f"Step {step.number} '{step.name}': one-pass run failed "
                                f"({failure.message}); running the steps one by one",
                    progress_percent=low)
            run.history.update({step.id: {"executions": 1, "completed": False,
                                          "given_up": False} for step in steps})
            return False
        seconds = time.monotonic() - started
        for step, execution_id, stage_dir, result in zip(steps, executions, stage_dirs, results,
                                                         strict=True):
            self._commit_result(handle, run, step, execution_id, stage_dir, result, seconds)
        return True

    # -- one step -----------------------------------------------------------------------

    def _run_step(self, handle: JobHandle, run: JobRun, step: Step, retry_attempt: int) -> None:
        assert run.input_path is not None and run.source_path is not None
        percent_at_start = run.percent(step, done=False)
        step_share = run.percent(step, done=True) - percent_at_start
        execution_id = handle.start_step(
            step_id=step.id, step_number=step.number, step_name=step.name,
            retry_attempt=retry_attempt, progress_percent=percent_at_start,
            input_data={"source": str(run.source_path), "action": step.action},
        )
        stage_dir = staging_dir(self.settings.staging, handle.job_code, handle.attempt, step.number)
        started = time.monotonic()
        try:
            ctx = self._context(handle, run, step, stage_dir, retry_attempt,
                                lambda f, stage: handle.progress(
                                    percent_at_start + step_share * f, stage or step.name))
            fn = get_action(step.action).fn
            if isolation_wanted(self.settings):  # in a child, under the step limits
                result = self._classified(step, run, lambda: run_isolated(
                    step.action, [ctx], fused=False, settings=self.settings)[0])
            else:
                result = self._classified(step, run, lambda: fn(ctx))
        except (Cancelled, Paused, LeaseLost) as exc:
            discard(stage_dir)
            self._close_interrupted(handle, run, step, execution_id, exc)
            raise
        except StepFailed as failure:
            discard(stage_dir)
            self._handle_failure(handle, run, step, execution_id, failure)
            return
        self._commit_result(handle, run, step, execution_id, stage_dir, result,
                            time.monotonic() - started)

    def _commit_result(self, handle: JobHandle, run: JobRun, step: Step, execution_id: int,
                       stage_dir: Path, result: ActionResult, seconds: float) -> None:
        output_dir = job_output_dir(self.settings.outputs, handle.job_code)
        _keep_earlier_outputs(run, step, result)
        staged = [o.staging_path for o in result.outputs]
        output_data = self._describe_outputs(result, output_dir, step, seconds)
        # The workflow's last step completes the job in the same transaction: one commit
        # (one WAL flush, one wake-up of the triggers) less per job, same end state as
        # _complete after it. Its outputs join the job's before the completion is built.
        last = step is run.steps[-1]
        if last:
            self._remember_outputs(run, step, output_data)
        handle.commit_step(execution_id, status="completed", output_data=output_data,
                           staged_files=staged, output_dir=output_dir,
                           log_message=f"Step {step.number} '{step.name}' completed",
                           progress_percent=run.percent(step, done=True),
                           then=self._completion(run) if last else None)
        run.completed = last
        discard(stage_dir)
        if not last:
            self._remember_outputs(run, step, output_data)

    def _context(self, handle: JobHandle, run: JobRun, step: Step, stage_dir: Path,
                 retry_attempt: int, on_progress: Any) -> ActionContext:
        """The action's view of this step; invalid parameters fail it for good."""
        assert run.input_path is not None and run.source_path is not None
        step_deadline = time.monotonic() + step.timeout_seconds
        try:
            params = get_action(step.action).validate({**step.parameters,
                                                       **run.step_overrides(step)})
        except PermanentError as exc:
            raise StepFailed("permanent", exc.message) from None
        return ActionContext(
            job_code=handle.job_code, step_number=step.number, step_name=step.name,
            input_path=run.input_path, source_path=run.source_path, params=params,
            staging_dir=stage_dir, attempt=retry_attempt,
            deadline=min(step_deadline, run.job_deadline),
            cancel_event=handle.stop_signal, on_progress=on_progress,
            on_log=handle.log, previous_outputs=run.outputs,
            workflow_code=run.context["workflow_code"],
            input_roots=self.settings.effective_input_roots,
            library_roots=self.settings.effective_library_roots,
            submit_files=functools.partial(submit_found_files, handle.pool,
                                           found_by=f"scan:{handle.job_code}"),
        )

    def _classified(self, step: Step, run: JobRun, call: Callable[[], T]) -> T:
        """Run an action with no transaction open; classify what it raises."""
        try:
            return call()
        except (Cancelled, Paused, LeaseLost):
            raise
        except psycopg.OperationalError:
            # The database went away under the step's own writes (progress, log): not the
            # step's fault. The job is abandoned and its lease decides, as after any outage.
            raise
        except StepTimedOut:
            if time.monotonic() >= run.job_deadline:
                minutes = run.context["timeout_minutes"]
                timed_out = JobTimedOut(
                    f"job ran past its workflow timeout (timeout_minutes = {minutes})")
                raise StepFailed("permanent", timed_out.message) from None
            raise StepFailed("transient",
                             f"step '{step.name}' ran past its timeout of {step.timeout_seconds} s"
                             ) from None
        except PermanentError as exc:
            raise StepFailed("permanent", exc.message) from None
        except TransientError as exc:
            raise StepFailed("transient", exc.message) from None
        except MemoryError:
            raise StepFailed("transient", "out of memory") from None
        except Exception as exc:  # an action's bug or an unforeseen library error
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                # The disk fills, and frees again: worth another attempt whatever the step.
                raise StepFailed("transient", f"no space left on the device: {exc}") from None
            # `retry` steps give unclassified errors another chance; others fail at once.
            error_class = "transient" if step.on_failure == "retry" else "permanent"
            raise StepFailed(error_class, f"{type(exc).__name__}: {exc}") from None

    def _describe_outputs(
        self, result: ActionResult, output_dir: Path, step: Step, seconds: float
    ) -> dict[str, Any]:
        outputs = []
        for out in result.outputs:
            final = output_dir / out.staging_path.name
            outputs.append({
                "path": str(final),
                "role": out.role,
                "size_bytes": out.staging_path.stat().st_size,
                "sha256": sha256_of(out.staging_path),
                "step": step.number,
                **out.meta,
            })
        primary = next((o["path"] for o in outputs if o["role"] == "primary"), None)
        return {**result.data, "outputs": outputs, "primary": primary,
                "seconds": round(seconds, 3)}

    @staticmethod
    def _remember_outputs(run: JobRun, step: Step, output_data: dict[str, Any]) -> None:
        run.outputs.extend(output_data.get("outputs", []))
        primary = output_data.get("primary")
        if primary:
            run.source_path = Path(primary)

    # -- failures and interruptions -----------------------------------------------------

    def _handle_failure(
        self, handle: JobHandle, run: JobRun, step: Step, execution_id: int, failure: StepFailed
    ) -> None:
        retries_used = int(run.context["retry_count"] or 0)
        max_retries = int(run.context["max_retries"] or 0)
        if failure.error_class == "transient" and retries_used < max_retries:
            delay = retry_delay(retries_used, self.settings.retry_base_seconds,
                                self.settings.retry_max_seconds)
            handle.commit_step(
                execution_id, status="failed", error_message=failure.message,
                error_class="transient",
                log_message=f"Step {step.number} '{step.name}' failed: {failure.message}; "
                            f"retry {retries_used + 1}/{max_retries} in {delay:.1f} s",
                progress_percent=run.percent(step, done=False),
                then=("job_schedule_retry", {
                    "delay_seconds": delay, "error_message": failure.message, "log_line": "",
                }),
            )
            raise StepFailed("retry_scheduled", failure.message)
        final_class = failure.error_class if failure.error_class == "permanent" else "exhausted"
        if step.on_failure == "continue":
            handle.commit_step(execution_id, status="failed", error_message=failure.message,
                               error_class=final_class,
                               log_message=f"Step {step.number} '{step.name}' failed: "
                                           f"{failure.message}; continuing",
                               progress_percent=run.percent(step, done=True))
            run.failed_steps.append({"step": step.number, "name": step.name,
                                     "error": failure.message})
            return
        message = f"step {step.number} '{step.name}' failed: {failure.message}"
        handle.commit_step(execution_id, status="failed", error_message=failure.message,
                           error_class=final_class, log_message=message,
                           progress_percent=run.percent(step, done=False))
        if final_class == "exhausted":
            message += f" (after {retries_used} retries)"
        raise StepFailed("transient" if final_class == "exhausted" else "permanent", message)

    def _close_interrupted(
        self, handle: JobHandle, run: JobRun, step: Step, execution_id: int, exc: BaseException,
        *, then: bool = True,
    ) -> None:
        """Close the step's execution and (``then``) move the job on as the stop asks."""
        if isinstance(exc, LeaseLost):
            return  # not ours any more: write nothing
        reason = "cancelled by an operator" if isinstance(exc, Cancelled) else "handed back"
        transition = self._interruption_transition(exc) if then else None
        try:
            handle.commit_step(execution_id, status="cancelled", error_message=reason,
                               error_class="cancelled",
                               log_message=f"Step {step.number} '{step.name}' {reason}",
                               progress_percent=run.percent(step, done=False), then=transition)
        except LeaseLost:
            raise Cancelled() from None

    def _stop_between_steps(self, handle: JobHandle, reason: BaseException) -> None:
        if isinstance(reason, LeaseLost):
            raise reason
        name, params = self._interruption_transition(reason)
        handle.finish(name, **params)
        raise reason

    @staticmethod
    def _interruption_transition(exc: BaseException) -> tuple[str, dict[str, Any]]:
        if isinstance(exc, Cancelled):
            return "job_cancelled", {"log_line": log_line("--- JOB CANCELLED BY ADMIN ---")}
        return "job_hand_back", {"log_line": log_line("Job handed back by its worker")}

    # -- job outcomes -------------------------------------------------------------------

    def _complete(self, handle: JobHandle, run: JobRun) -> None:
        name, params = self._completion(run)
        handle.finish(name, **params)

    @staticmethod
    def _completion(run: JobRun) -> tuple[str, dict[str, Any]]:
        """The statement that completes the job, with its parameters."""
        primary = job_primary_output(run.outputs)
        metadata = {"outputs": run.outputs, "failed_steps": run.failed_steps,
                    "workflow_code": run.context["workflow_code"],
                    "workflow_version": run.context["workflow_version"]}
        summary = f"Completed successfully: {len(run.outputs)} output(s)"
        if run.failed_steps:
            summary += f", {len(run.failed_steps)} step(s) failed and were skipped"
        return "job_complete", {"output_metadata": Jsonb(metadata),
                                "output_file_path": primary, "log_line": log_line(summary)}

    def _fail_job(self, handle: JobHandle, error_class: str, message: str) -> None:
        with contextlib.suppress(LeaseLost):  # another worker owns the job now
            handle.finish("job_fail", error_message=message, error_class=error_class,
                          output_metadata=None, log_line=log_line(f"FAILED: {message}"))
