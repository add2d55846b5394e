"""What one task's run knows of its job's other tasks: what the finished steps gave
(their outputs are this step's sources, their results its expressions' ``steps``), and
the job's completion when this task's commit is the job's last (built from every
task's committed ``step_executions``, under the job's lock).

A task is a step of a job, or one item of a fanned-out step (``mediaq.sql`` job_tasks);
the executor runs one at a time (or a fused pass of sibling tasks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mediaq import db
from mediaq.storage.remote import ObjectStorage
from mediaq.worker import completer
from mediaq.worker.job_handle import JobHandle, Settle
from mediaq.worker.job_run import Item, JobRun, Step
from mediaq.worker.outcomes import JobCompleted
from mediaq.worker.run_outputs import remember_outputs


def refreshed(handle: JobHandle, run: JobRun) -> JobRun:
    """A run kept from the job's last task on this worker, with what the job's tasks
    have committed since (``step_history_of_job``) and nothing recalled yet."""
    with handle.pool.connection() as conn:
        history = db.fetch_all(conn, "step_history_of_job", {"job_id": handle.job_id})
    run.history = {(h["step_id"], h["item_index"]): h for h in history}
    run.outputs.clear()
    run.failed_steps.clear()
    run.results.clear()
    run.primaries.clear()
    run.completed = None
    return run


def item_counts(pool_rows: list[db.Row]) -> dict[int, int]:
    """Each fanned-out step's item count, by step id (from its expanded task)."""
    return {int(r["step_id"]): int(r["item_count"]) for r in pool_rows
            if r["item_index"] is None and r["item_count"] is not None}


def recall(objects: ObjectStorage, run: JobRun, counts: dict[int, int]) -> None:
    """What earlier tasks of the job gave, in graph order: the job's outputs so far, the
    results later steps' expressions and fan-ins read, the primaries later steps read."""
    for step in run.order:
        for (step_id, index), past in sorted(
                ((k, v) for k, v in run.history.items() if k[0] == step.id),
                key=lambda kv: -1 if kv[0][1] is None else kv[0][1]):
            assert step_id == step.id
            if past["completed"]:
                item = Item(index, {}, counts.get(step.id, 1)) if index is not None \
                    else Item(None, {})
                remember_outputs(objects, run, step, item, past["output_data"] or {})
            elif past["given_up"] and step.on_failure == "continue" and index is None:
                run.failed_steps.append({"step": step.number, "name": step.name})


def completion_builder(handle: JobHandle, run: JobRun
                       ) -> Callable[[db.Connection], tuple[str, dict[str, Any]]]:
    """The job's completion, built in the commit of its last task from every task's
    committed executions (each step's items in order), recorded on the handle."""

    def build(conn: db.Connection) -> tuple[str, dict[str, Any]]:
        rows = db.fetch_all(conn, "step_history_of_job", {"job_id": handle.job_id})
        outputs: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for step in run.order:
            mine = sorted((r for r in rows if r["step_id"] == step.id),
                          key=lambda r: -1 if r["item_index"] is None else r["item_index"])
            for row in mine:
                if row["completed"]:
                    outputs.extend((row["output_data"] or {}).get("outputs", []))
                elif row["given_up"] and step.on_failure == "continue":
                    failed.append({"step": step.number, "name": step.name,
                                   **({"item": row["item_index"]}
                                      if row["item_index"] is not None else {}),
                                   **({"error": row["error_message"]}
                                      if row["error_message"] else {})})
        completion = JobCompleted(outputs=tuple(outputs), failed_steps=tuple(failed),
                                  workflow_code=run.context["workflow_code"],
                                  workflow_version=run.context["workflow_version"])
        handle.ended_job = completion
        statement = completer.job_statement(completion)
        assert statement is not None
        return statement

    return build


def settle(handle: JobHandle, run: JobRun, step: Step, item: Item, state: str) -> Settle:
    """How the commit of ``step`` (``item``) settles its task."""
    return Settle(task_id=handle.tasks[(step.id, item.index)], state=state,
                  completion=completion_builder(handle, run))
