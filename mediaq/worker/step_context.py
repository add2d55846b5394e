"""What an action sees of its step: ``ActionContext``, built from the run."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from mediaq.actions import ActionContext, get_action
from mediaq.config import Settings
from mediaq.errors import PermanentError, StepFailed
from mediaq.storage.remote import ObjectStorage
from mediaq.triggers.scan import submit_found_files
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.job_run import SINGLE, Item, JobRun, Step
from mediaq.worker.outcomes import ErrorClass


def action_context(settings: Settings, objects: ObjectStorage, handle: JobHandle,
                   run: JobRun, step: Step, stage_dir: Path, retry_attempt: int,
                   on_progress: Any, item: Item = SINGLE) -> ActionContext:
    """The action's view of this step (of one item of it); invalid parameters fail it
    for good. An item's parameters go over the step's, the job's over both."""
    assert run.input_path is not None
    step_deadline = time.monotonic() + step.timeout_seconds
    try:
        params = get_action(step.action).validate({**step.parameters, **item.params,
                                                   **run.step_overrides(step)})
    except PermanentError as exc:
        raise StepFailed(ErrorClass.PERMANENT, exc.message) from None
    return ActionContext(
        job_code=handle.job_code, step_number=step.number, step_name=step.name,
        input_path=run.input_path, source_path=run.source_for(step), params=params,
        staging_dir=stage_dir, attempt=retry_attempt,
        deadline=min(step_deadline, run.job_deadline),
        cancel_event=handle.stop_signal, on_progress=on_progress,
        on_log=handle.log, previous_outputs=objects.with_local_paths(run.outputs),
        workflow_code=run.context["workflow_code"],
        input_roots=settings.storage.effective_input_roots,
        library_roots=settings.storage.effective_library_roots,
        needs_outputs=readable_needs(objects, run.needs_outputs(step)),
        item_index=item.index,
        submit_files=functools.partial(submit_found_files, handle.pool,
                                       found_by=f"scan:{handle.job_code}"),
    )


def readable_needs(objects: ObjectStorage, needs: dict[str, Any]) -> dict[str, Any]:
    """The results of the needed steps with each output's ``local_path`` where this host
    reads it: a fan-in's items may have run on other hosts, their outputs in the store."""
    def readable(result: Any) -> Any:
        if isinstance(result, list):  # a fanned-out step: one result per item
            return [readable(r) for r in result]
        if not isinstance(result, dict) or not result.get("outputs"):
            return result
        return {**result, "outputs": objects.with_local_paths(list(result["outputs"]))}
    return {name: readable(result) for name, result in needs.items()}
