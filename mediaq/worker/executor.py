"""Run one claimed task of a job: a step, one item of a fanned-out step, or a one-pass
group of sibling steps' tasks.

Reads as a pipeline: load the job → resolve its graph → check the input → recall what
the finished tasks gave (``task_plan``) → the task's step (``step_plan``: skipped, its
items made, run, or run in one pass with its ready siblings): start (fenced) → run the
action (no transaction open) → decide the step's outcome → have the completer write it,
settling the task (and, for the job's last task, completing the job) in the same commit.
Every decision is a value from ``mediaq.worker.outcomes`` (the rules there are pure
functions); which statement records it is ``mediaq.worker.completer``'s business.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import structlog

from mediaq import catalog, db
from mediaq.config import Settings
from mediaq.errors import (
    InputRefused,
    LeaseLost,
    PermanentError,
    StepFailed,
    TransientError,
    WorkflowError,
)
from mediaq.outputs import (
    discard_earlier_attempts,
)
from mediaq.storage.uri import is_s3
from mediaq.worker import publications, storage_health, task_plan
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.job_input import first_unfinished, local_input
from mediaq.worker.job_run import SINGLE, Item, JobRun, Step, load_run, plan_graph
from mediaq.worker.outcomes import (
    Abandoned,
    AttemptLost,
    ErrorClass,
    FusedPassFailed,
    JobCompleted,
    JobFailed,
    JobOutcome,
    TaskDone,
    cannot_store,
    unstorable_reason,
)
from mediaq.worker.step_plan import Skip, fused_groups, plan_items
from mediaq.worker.step_runner import StepRunner

# JobRun and Step live in job_run (the completer and the rules read them too); they stay
# importable from here for callers that build a run by hand (tests/test_errors.py).
__all__ = ["Executor", "JobRun", "Step"]

log = structlog.get_logger("mediaq.executor")


class Executor(StepRunner):
    """Runs claimed tasks; one instance per worker, called from its job threads."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._held: dict[int, list[str]] = {}  # cache entries pinned by each running job

    def run(self, handle: JobHandle, workflow_id: int) -> JobOutcome:
        """Run the job to an outcome, have it written (when the job is still ours) and
        return it."""
        bound = log.bind(worker_id=handle.worker_id, job_id=handle.job_id,
                         job_code=handle.job_code, attempt=handle.attempt)
        outcome: JobOutcome
        try:
            outcome = self._attempt(handle, workflow_id)
        except LeaseLost:
            # A fenced write touched no row: another worker owns the job, and whatever this
            # attempt decided is not ours to write (a refused job_fail or stop included).
            outcome = AttemptLost()
        except psycopg.Error as exc:
            # Ownership is unknown until the database answers again: stop, and let the
            # lease decide (it expires and a rescuer hands the job on).
            outcome = Abandoned(str(exc).strip().splitlines()[0] if str(exc) else repr(exc))
        match outcome:
            case JobCompleted(outputs=outputs):
                bound.info("job:completed")
                if outputs:  # the media library: its input and outputs, probed (no-op
                    # jobs, which make nothing, cost nothing here)
                    catalog.record_job_quietly(handle.pool, handle.job_id)
            case JobFailed(message=message):
                bound.info("job:failed", error=message)
            case AttemptLost():
                bound.warning("job:lease_lost", tasks=handle.task_ids)
            case Abandoned(error=error):
                bound.warning("job:abandoned", error=error)
            case _:  # a retry, a cancel or a hand-back: the job's log says so
                pass
        return outcome

    def _attempt(self, handle: JobHandle, workflow_id: int) -> JobOutcome:
        # Run-ahead: the job's next task on the same worker reuses what the last one
        # loaded and checked (the job, its graph, its local input); only what the job's
        # tasks committed meanwhile, here or elsewhere, is read again.
        cached = handle.run_cache if isinstance(handle.run_cache, JobRun) else None
        run = task_plan.refreshed(handle, cached) if cached is not None \
            else load_run(handle, workflow_id)
        handle.run_cache = None
        self._held[handle.job_id] = []
        try:
            outcome = self._run_steps(handle, run, fresh=cached is None)
            if isinstance(outcome, TaskDone) and run.input_path is not None \
                    and not is_s3(str(run.context["input_file_path"])):
                handle.run_cache = run
            return outcome
        except (psycopg.Error, UnicodeEncodeError) as exc:
            # The database refused a write for its data (a step's own result is handled
            # where it is committed, see _commit_result): that is for good, so the job
            # fails, naming its file, instead of being abandoned to its lease and re-run.
            reason = unstorable_reason(exc)
            if reason is None:
                raise  # a lost connection: run() abandons the attempt
            name = Path(str(run.context["input_file_path"])).name
            return self._fail(handle, JobFailed(ErrorClass.PERMANENT,
                                                cannot_store(name, reason, "a job record")))
        finally:
            self.objects.cache.release(self._held.pop(handle.job_id, []))

    def _run_steps(self, handle: JobHandle, run: JobRun, *, fresh: bool = True) -> JobOutcome:
        if handle.publications_left or any(h.get("unpublished")
                                           for h in run.history.values()):
            # Earlier steps' outputs committed but not yet in place (their worker died
            # after its COMMIT, or is still copying them): published, or waited for,
            # before anything reads them or their staging folders are taken for leftovers.
            handle.publications_left = publications.finish_job(
                handle.pool, self.objects, handle.worker_id, handle.job_id) > 0
        if fresh:
            prepared = self._prepare(handle, run)
            if prepared is not None:
                return prepared
        (step_id, item_index) = next(iter(handle.tasks))
        step = next(s for s in run.steps if s.id == step_id)
        tasks: list[db.Row] = []
        if item_index is not None or any(index is not None for _, index in run.history):
            with handle.pool.connection() as conn:  # item parameters and counts
                tasks = db.fetch_all(conn, "job_tasks_of", {"job_id": handle.job_id})
        counts = task_plan.item_counts(tasks)
        task_plan.recall(self.objects, run, counts)
        if item_index is None:
            ended = self._run_or_skip(handle, run, step)
        else:
            mine = next(t for t in tasks if t["id"] == handle.task_ids[0])
            ended = self._run_item(handle, run, step, Item(
                item_index, dict(mine["item_params"] or {}), counts.get(step.id, 1)))
        if ended is not None:
            return ended
        return handle.ended_job if handle.ended_job is not None else TaskDone()

    def _prepare(self, handle: JobHandle, run: JobRun) -> JobOutcome | None:
        """The job's first task on this worker: its graph, this host's storage and the
        job's input checked; the job's outcome when it cannot go on, else None."""
        if not handle.publications_left:  # else they hold committed outputs still
            discard_earlier_attempts(self.settings.storage.staging, handle.job_code,
                                     handle.attempt)
        if not run.steps:
            return self._fail(handle, JobFailed(ErrorClass.PERMANENT, "the workflow has no steps"))
        try:
            plan_graph(run)
        except WorkflowError as exc:
            return self._fail(handle, JobFailed(ErrorClass.PERMANENT, exc.message))
        unhealthy = storage_health.hand_back_if_unhealthy(handle, self.settings)
        if unhealthy is not None:
            return unhealthy  # this host's storage is not fit: the job waits, unharmed
        try:
            run.input_path = local_input(self.objects, self.settings, handle, run,
                                         held=self._held.setdefault(handle.job_id, []))
        except InputRefused as exc:
            # A missing input is the job's fault only where the roots are healthy.
            unhealthy = storage_health.hand_back_if_unhealthy(handle, self.settings,
                                                              fresh=True)
            return unhealthy or self._fail(handle, JobFailed(ErrorClass.PERMANENT,
                                                             exc.message))
        except PermanentError as exc:
            return self._fail(handle, JobFailed(ErrorClass.PERMANENT, exc.message))
        except TransientError as exc:  # the store is unreachable or the download stalled
            return self._input_unavailable(handle, run, exc)
        if run.context["input_bytes"] is None and run.input_path.is_file():
            handle.record_input_bytes(run.input_path.stat().st_size)
        return None

    def _run_item(self, handle: JobHandle, run: JobRun, step: Step,
                  item: Item) -> JobOutcome | None:
        """One item of a fanned-out step (its task made by the step's own task)."""
        done = run.history.get((step.id, item.index))
        if done is not None and done["completed"]:  # an earlier attempt committed it
            handle.settle_alone(task_plan.settle(handle, run, step, item, "completed"),
                                f"Step {step.number} '{step.name}'{item.label} was done")
            return None
        stop = self._stop_asked(handle) or self.breakers.admit(handle, step.action)
        if stop is not None:
            return stop
        return self._run_step(handle, run, step, item,
                              retry_attempt=int(done["executions"]) if done else 0)

    def _input_unavailable(self, handle: JobHandle, run: JobRun,
                           exc: TransientError) -> JobOutcome:
        """A transient failure to fetch the input fails the first unfinished step as
        transient, so the step's retry rules (back-off, retry_count) apply to it."""
        step = next((s for s in run.steps if (s.id, None) in handle.tasks), None) \
            or first_unfinished(run)
        done = run.history.get((step.id, None))
        execution_id = handle.start_step(
            step_id=step.id, step_number=step.number, step_name=step.name,
            retry_attempt=int(done["executions"]) if done else 0,
            progress_percent=run.percent(step, done=False),
            input_data={"source": str(run.context["input_file_path"]), "action": step.action})
        ended = self._failed(handle, run, step, execution_id,
                             StepFailed(ErrorClass.TRANSIENT, exc.message))
        return ended if ended is not None else self._fail(
            handle, JobFailed(ErrorClass.TRANSIENT, exc.message))

    # -- steps -------------------------------------------------------------------------

    def _run_or_skip(self, handle: JobHandle, run: JobRun, step: Step) -> JobOutcome | None:
        """Run the task of ``step`` unless an earlier attempt finished it or its condition
        is false; a fanned-out step's task makes its items' tasks instead. The job's
        outcome if the attempt ends here, else None (the task is settled)."""
        past = run.history.get((step.id, None))
        if past is not None and (past["skipped"] or (step.for_each is None
                                                     and past["completed"])):
            state = "skipped" if past["skipped"] else "completed"
            handle.settle_alone(task_plan.settle(handle, run, step, SINGLE, state),
                                f"Step {step.number} '{step.name}' was {state} already")
            return None
        if past is not None and past["given_up"] and step.on_failure == "continue":
            handle.settle_alone(task_plan.settle(handle, run, step, SINGLE, "failed"),
                                f"Step {step.number} '{step.name}' failed already")
            return None
        stop = self._stop_asked(handle)
        if stop is not None:
            return stop
        planned = plan_items(step, run)
        if isinstance(planned, Skip):
            handle.skip_step(step_id=step.id, step_number=step.number, step_name=step.name,
                             reason=planned.reason, progress_percent=run.percent(step, done=True),
                             input_data={"action": step.action, "when": step.when})
            handle.settle_alone(task_plan.settle(handle, run, step, SINGLE, "skipped"),
                                f"Step {step.number} '{step.name}' counts as done")
            return None
        waiting = self.breakers.admit(handle, step.action)  # an open breaker: wait, unharmed
        if waiting is not None:
            return waiting
        if isinstance(planned, StepFailed):  # its condition or list could not be evaluated
            execution_id = handle.start_step(
                step_id=step.id, step_number=step.number, step_name=step.name,
                retry_attempt=0, progress_percent=run.percent(step, done=False),
                input_data={"action": step.action, "when": step.when,
                            "for_each": step.for_each})
            return self._failed(handle, run, step, execution_id, planned)
        if step.for_each is not None:
            # The items are tasks of their own, for any worker to claim (this one first).
            handle.expand(handle.tasks[(step.id, None)], [dict(i.params) for i in planned],
                          f"Step {step.number} '{step.name}': {len(planned)} item(s)")
            return None
        group = self._fuse_with_siblings(handle, run, step)
        if len(group) > 1:
            fused = self._run_fused(handle, run, group)
            if fused is None:
                return None  # every step of the group is committed
            if not isinstance(fused, FusedPassFailed):
                return fused  # the attempt ended
            for member in group:  # one by one, each with its own retry and failure rules
                ended = self._run_step(handle, run, member, SINGLE, retry_attempt=1)
                if ended is not None:
                    return ended
            return None
        return self._run_step(handle, run, step, SINGLE,
                              retry_attempt=int(past["executions"]) if past else 0)

    def _fuse_with_siblings(self, handle: JobHandle, run: JobRun, step: Step) -> list[Step]:
        """``step`` and the sibling steps whose ready tasks this worker claims to run with
        it in one decode-once pass (``fuse: auto``: only while no other worker of the
        category is idle; otherwise they are left for others to claim: spread)."""
        group = next((g for g in fused_groups(run) if step in g), [step])
        siblings = [s for s in group if s is not step]
        if not siblings:
            return [step]
        claimed = handle.claim_siblings([s.number for s in siblings],
                                        [s.number for s in group], self.lease_seconds)
        by_number = {s.number: s for s in siblings}
        for row in claimed:
            sibling = by_number[row["step_number"]]
            handle.add_task(row["task_id"], row["task_attempt"], sibling.id, None)
        chosen = [s for s in group if s is step or s.number in
                  {int(r["step_number"]) for r in claimed}]
        handle.log(f"Step {step.number} '{step.name}': "
                   + (f"fused with step(s) {', '.join(str(s.number) for s in chosen[1:])}"
                      " (one decode-once pass)" if len(chosen) > 1
                      else "siblings left to other workers (spread)"))
        return chosen
