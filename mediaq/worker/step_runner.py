"""Running one step's action and writing what it came to: the action in a thread of
the job (no transaction open), under the watchdog, in a child when isolated; its result
committed with its task (``JobHandle.commit_step``) and published after that commit
(``mediaq.worker.publications``); its failure
or interruption closed as the rules say (``mediaq.worker.outcomes``). A one-pass run of
sibling steps (decode once, encode many) is the same, for several steps at once.

``mediaq.worker.executor`` decides which step (item, group) a task runs; this is how.
"""


from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psycopg
import structlog

from mediaq.actions import ActionResult, get_action
from mediaq.config import Settings
from mediaq.errors import (
    Cancelled,
    Interrupt,
    LeaseLost,
    Paused,
    PermanentError,
    StepFailed,
    TransientError,
)
from mediaq.outputs import (
    discard,
    job_output_dir,
    publish,
    staging_dir,
)
from mediaq.storage.setup import object_storage
from mediaq.worker import completer, publications, task_plan
from mediaq.worker.breakers import Breakers
from mediaq.worker.isolation import isolation_wanted, run_isolated
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.job_run import SINGLE, Item, JobRun, Step
from mediaq.worker.outcomes import (
    AttemptLost,
    ContinueAfterFailure,
    ErrorClass,
    FusedPassFailed,
    JobFailed,
    JobOutcome,
    RetryScheduled,
    StepCompleted,
    StepGaveUp,
    StepInterrupted,
    after_failure,
    cannot_store,
    classify,
    stop_outcome,
    unstorable_reason,
)
from mediaq.worker.publications import Publication
from mediaq.worker.run_outputs import (
    describe_outputs,
    forget_outputs,
    keep_earlier_outputs,
    remember_outputs,
)
from mediaq.worker.step_context import action_context
from mediaq.worker.watchdog import Watchdog, abandon_step

log = structlog.get_logger("mediaq.executor")
T = TypeVar("T")


class StepRunner:
    """The step machinery of a worker's executor (one instance per worker)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lease_seconds = settings.worker.lease_seconds
        # Operations that survive a bad day (issue 25): breakers on actions, and a hard
        # deadline and stall detector over every step, kept by a thread of their own.
        self.breakers = Breakers(settings)
        self.watchdog = Watchdog(settings.worker.step_timeout_grace_seconds,
                                 settings.worker.stall_seconds)
        # s3:// inputs and outputs, the input cache, path mappings (mediaq.storage).
        self.objects = object_storage(settings.storage)

    @staticmethod
    def _fail(handle: JobHandle, failed: JobFailed) -> JobFailed:
        completer.finish(handle, failed)  # refused (LeaseLost): run() says AttemptLost
        return failed

    @staticmethod
    def _stop_asked(handle: JobHandle) -> JobOutcome | None:
        """Between steps: the job's outcome (written) if a stop was asked, else None."""
        signal = handle.stop_signal
        if not signal.is_set() or signal.reason is None:
            return None
        stop = stop_outcome(signal.reason)
        completer.finish(handle, stop)  # a lost lease writes nothing
        return stop

    # -- fused steps (decode once, encode many) -----------------------------------------

    def _run_fused(self, handle: JobHandle, run: JobRun,
                   steps: list[Step]) -> JobOutcome | FusedPassFailed | None:
        """Run ``steps`` in one pass: None when every step is committed, FusedPassFailed
        when the pass failed (its executions are then closed, and the steps run one by
        one, each with its own retry and failure rules), or the job's outcome when a stop
        request ended the attempt."""
        source = run.source_for(steps[0])
        stop = self._stop_asked(handle) or self.breakers.admit(handle, steps[0].action)
        if stop is not None:
            return stop
        first, last = steps[0], steps[-1]
        low, high = run.percent(first, done=False), run.percent(last, done=True)
        executions = [
            handle.start_step(step_id=step.id, step_number=step.number, step_name=step.name,
                              retry_attempt=0, progress_percent=low,
                              input_data={"source": str(source), "action": step.action,
                                          "fused_steps": [s.number for s in steps]})
            for step in steps
        ]
        stage_dirs = [staging_dir(self.settings.storage.staging, handle.job_code, handle.attempt,
                                  step.number) for step in steps]
        started = time.monotonic()
        label = " + ".join(step.name for step in steps)
        try:
            contexts = [action_context(
                self.settings, self.objects, handle, run, step, stage_dir, 0,
                lambda f, stage: handle.progress(low + (high - low) * f, stage or label,
                                                 fraction=f))
                for step, stage_dir in zip(steps, stage_dirs, strict=True)]
            # The pass does every step's work, so it gets their timeouts together.
            together = time.monotonic() + sum(step.timeout_seconds for step in steps)
            for ctx in contexts:
                ctx.deadline = min(together, run.job_deadline)
            fuse = get_action(first.action).fuse
            assert fuse is not None
            with self.watchdog.watching(handle, contexts[0].deadline, functools.partial(
                    abandon_step, self.breakers, self.settings, self.watchdog, handle, run,
                    first, executions[0], SINGLE,
                    also_close=tuple(zip(steps[1:], executions[1:], strict=True)))):
                if isolation_wanted(self.settings, first.action):
                    results = self._classified(first, run, lambda: run_isolated(
                        first.action, contexts, fused=True, settings=self.settings))
                else:
                    results = self._classified(first, run, lambda: fuse(contexts))
        except (Cancelled, Paused, LeaseLost) as signal:
            for stage_dir in stage_dirs:
                _discard_unless_lost(stage_dir, signal)
            return self._interrupted(handle, run, list(zip(steps, executions, strict=True)),
                                     signal)
        except StepFailed as failure:
            for stage_dir in stage_dirs:
                discard(stage_dir)
            fallback = FusedPassFailed(failure.message)
            for step, execution_id in zip(steps, executions, strict=True):
                completer.close_step(handle, execution_id, step, fallback, low)
            run.history.update({(step.id, None): {"executions": 1, "completed": False,
                                                  "skipped": False, "given_up": False}
                                for step in steps})
            return fallback
        seconds = time.monotonic() - started
        pending = list(zip(steps, executions, stage_dirs, results, strict=True))
        for index, (step, execution_id, stage_dir, result) in enumerate(pending):
            refused = self._commit_result(handle, run, step, SINGLE, execution_id, stage_dir,
                                          result, seconds)
            if refused is None:
                continue
            # The database refused this step's result: the step fails for good. If that
            # ends the attempt, the pass's later steps close (unpublished) before the job
            # fails; with on_failure: continue, they are committed as usual.
            later = pending[index + 1:]
            ended = self._failed(handle, run, step, execution_id, refused,
                                 also_close=[(s, e) for s, e, _, _ in later])
            if ended is not None:
                for _, _, later_dir, _ in later:
                    discard(later_dir)
                return ended
        return None

    # -- one step -----------------------------------------------------------------------

    def _run_step(self, handle: JobHandle, run: JobRun, step: Step, item: Item,
                  retry_attempt: int) -> JobOutcome | None:
        source = run.source_for(step)
        percent_at_start = run.percent(step, done=False, item=item)
        step_share = run.percent(step, done=True, item=item) - percent_at_start
        execution_id = handle.start_step(
            step_id=step.id, step_number=step.number, step_name=step.name,
            retry_attempt=retry_attempt, progress_percent=percent_at_start,
            input_data={"source": str(source), "action": step.action,
                        **({"item": item.params} if item.index is not None else {})},
            item_index=item.index, item_label=item.label,
        )
        stage_dir = staging_dir(self.settings.storage.staging, handle.job_code, handle.attempt,
                                step.number, item.index)
        started = time.monotonic()
        try:
            ctx = action_context(
                self.settings, self.objects, handle, run, step, stage_dir, retry_attempt,
                lambda f, stage: handle.progress(percent_at_start + step_share * f,
                                                 stage or step.name, fraction=f),
                item=item)
            fn = get_action(step.action).fn
            with self.watchdog.watching(handle, ctx.deadline, functools.partial(
                    abandon_step, self.breakers, self.settings, self.watchdog, handle, run,
                    step, execution_id, item)):
                if isolation_wanted(self.settings, step.action):  # in a child (step limits)
                    result = self._classified(step, run, lambda: run_isolated(
                        step.action, [ctx], fused=False, settings=self.settings)[0])
                else:
                    result = self._classified(step, run, lambda: fn(ctx))
        except (Cancelled, Paused, LeaseLost) as signal:
            _discard_unless_lost(stage_dir, signal)
            return self._interrupted(handle, run, [(step, execution_id)], signal)
        except StepFailed as failure:
            discard(stage_dir)
            return self._failed(handle, run, step, execution_id, failure, item=item)
        refused = self._commit_result(handle, run, step, item, execution_id, stage_dir,
                                      result, time.monotonic() - started)
        return None if refused is None else self._failed(handle, run, step, execution_id,
                                                          refused, item=item)

    def _commit_result(self, handle: JobHandle, run: JobRun, step: Step, item: Item,
                       execution_id: int, stage_dir: Path, result: ActionResult,
                       seconds: float) -> StepFailed | None:
        """Record a step's result, then publish its outputs; None when it is committed,
        else the step's permanent failure (the database refused the result for its data;
        nothing was published) for the caller to close the step with.

        The commit records what the step publishes (``mediaq.worker.publications``);
        the files move only after it, so none is ever at a final location for a step
        the database does not have, and no copy holds the job row's lock."""
        output_dir = job_output_dir(self.settings.storage.outputs, handle.job_code)
        keep_earlier_outputs(run, step, item, result)
        staged = tuple(o.staging_path for o in result.outputs)
        output_data = describe_outputs(self.objects, result, output_dir, step, item, seconds,
                                       handle.job_code)
        records = output_data["outputs"]
        if self.objects.output_root is not None and staged:
            # Uploaded under this attempt's own keys now; copied to the final keys only
            # after the fenced commit recorded them, so a worker that lost the job
            # publishes nothing.
            try:
                uploaded = self.objects.stage(staged, stage_dir, handle.job_code)
            except (PermanentError, TransientError) as exc:
                discard(stage_dir)
                self.objects.discard(stage_dir)
                error_class = (ErrorClass.TRANSIENT if isinstance(exc, TransientError)
                               else ErrorClass.PERMANENT)
                return StepFailed(error_class, exc.message)
            planned = [Publication(str(u.staged), str(u.final), int(r["size_bytes"]),
                                   str(r["sha256"]))
                       for u, r in zip(uploaded, records, strict=True)]
        else:
            planned = [Publication(self.objects.path_map.to_canonical(path), str(r["path"]),
                                   int(r["size_bytes"]), str(r["sha256"]))
                       for path, r in zip(staged, records, strict=True)]
        # The job's last task completes the job in the same transaction (one commit, one
        # WAL flush less per job): the commit settles the task under the job's lock and
        # builds the completion when no other task is left (task_plan.completion_builder).
        known = len(run.outputs)
        outcome = StepCompleted(output_data=output_data, publications=tuple(planned))
        try:
            ids = completer.close_step(
                handle, execution_id, step, outcome,
                run.percent(step, done=outcome.advances, item=item),
                settle=task_plan.settle(handle, run, step, item, "completed"))
        except (psycopg.Error, UnicodeEncodeError) as exc:
            # Refused for its data even after ``mediaq.storable`` (a NaN, say): the same
            # result would be refused again, so the step fails for good, naming the file,
            # rather than the job being abandoned to its lease and re-run. The
            # transaction rolled back: nothing was published, the job is still ours.
            handle.settle_after_publication = None  # rolled back with the rest
            reason = unstorable_reason(exc)
            if reason is None:
                raise  # a lost connection: run() abandons the attempt to its lease
            discard(stage_dir)
            self.objects.discard(stage_dir)
            del run.outputs[known:]
            forget_outputs(run, step, item)
            assert run.input_path is not None
            return StepFailed(ErrorClass.PERMANENT, cannot_store(run.input_path.name, reason))
        publications.failpoint("after_commit", step.number)
        left = publications.publish_committed(handle.pool, self.objects, handle.worker_id,
                                                    ids, planned)
        if self.objects.output_root is not None:
            # This host's copy of each output, for later steps here (local_copy checks
            # it against the record before use): not a published output.
            for path in staged:
                with contextlib.suppress(OSError):
                    publish(path, output_dir)
        if left:
            # Kept for the next comer (this worker's next task of the job, another
            # host's, or the maintenance loop): the staging sweeps keep them too.
            handle.publications_left = True
        else:
            discard(stage_dir)
            self.objects.discard(stage_dir)
        deferred, handle.settle_after_publication = handle.settle_after_publication, None
        if deferred is not None:  # the job's last task: it completes the job now
            handle.settle_alone(deferred, f"Step {step.number} '{step.name}'{item.label}: "
                                + (f"{left} output(s) left to publish" if left
                                   else f"{len(planned)} output(s) published"))
        self.breakers.succeeded(handle, step.action)
        remember_outputs(self.objects, run, step, item, output_data, fresh=True)
        return None

    def _classified(self, step: Step, run: JobRun, call: Callable[[], T]) -> T:
        """Run an action with no transaction open; what it raises becomes StepFailed
        (``outcomes.classify``), except the signals the caller acts on."""
        try:
            return call()
        except Interrupt:  # a stop request, not the step's failure: the caller acts on it
            raise
        except psycopg.OperationalError:
            # The database went away under the step's own writes (progress, log): not the
            # step's fault. The job is abandoned and its lease decides, as after any outage.
            raise
        except Exception as exc:
            raise classify(exc, step, past_job_deadline=time.monotonic() >= run.job_deadline,
                           timeout_minutes=run.context["timeout_minutes"]) from None

    # -- failures and interruptions -----------------------------------------------------

    def _failed(self, handle: JobHandle, run: JobRun, step: Step, execution_id: int,
                failure: StepFailed, also_close: list[tuple[Step, int]] | None = None,
                item: Item = SINGLE) -> JobOutcome | None:
        """Close the failed step as the rules say; the job's outcome if the attempt ends.
        ``also_close``: executions of a one-pass run's later steps, closed as 'fused'
        first when the failure ends the attempt (the job must still be ours to close
        them)."""
        if failure.error_class == ErrorClass.TRANSIENT:
            self.breakers.failed(handle, step.action, failure.message)
        outcome = after_failure(
            failure, step, retries_used=int(run.context["retry_count"] or 0),
            max_retries=int(run.context["max_retries"] or 0),
            retry_base_seconds=self.settings.worker.retry_base_seconds,
            retry_max_seconds=self.settings.worker.retry_max_seconds)
        if also_close and not isinstance(outcome, ContinueAfterFailure):
            for later, later_execution in also_close:
                completer.close_step(handle, later_execution, later,
                                     FusedPassFailed(f"step {step.number}: {failure.message}"),
                                     run.percent(later, done=False))
        completer.close_step(handle, execution_id, step, outcome,
                             run.percent(step, done=outcome.advances, item=item),
                             settle=(task_plan.settle(handle, run, step, item, "failed")
                                     if isinstance(outcome, ContinueAfterFailure) else None))
        match outcome:
            case ContinueAfterFailure():
                run.failed_steps.append({"step": step.number, "name": step.name,
                                         **({"item": item.index} if item.index is not None
                                            else {}),
                                         "error": outcome.error})
                return None
            case StepGaveUp(job=failed):
                return self._fail(handle, failed)
            case RetryScheduled():
                return outcome

    def _interrupted(self, handle: JobHandle, run: JobRun, executions: list[tuple[Step, int]],
                     signal: BaseException) -> JobOutcome:
        """A stop request reached running steps (one, or a one-pass group whose first step
        moves the job): close them as cancelled and move the job on as the stop asks."""
        stop = stop_outcome(signal)
        if isinstance(stop, AttemptLost):
            return stop  # not ours any more: write nothing
        (first, first_execution), others = executions[0], executions[1:]
        for step, execution_id in others:
            completer.close_step(handle, execution_id, step,
                                 StepInterrupted(stop, moves_job=False),
                                 run.percent(step, done=False))
        completer.close_step(handle, first_execution, first, StepInterrupted(stop),
                             run.percent(first, done=False))
        return stop


def _discard_unless_lost(stage_dir: Path, signal: BaseException) -> None:
    """Discard a stopped step's staged files, unless its task was lost: the task's new
    owner (on this host, in the same folder: same job attempt, step and item) may be
    staging there now; discard_earlier_attempts and the pruner clean up after it."""
    if not isinstance(signal, LeaseLost):
        discard(stage_dir)

