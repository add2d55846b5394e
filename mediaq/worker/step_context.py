"""What an action sees of its step: ``ActionContext``, built from the run."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

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
    read = output_reader(objects, handle.job_code, step, item)
    source: Path | Callable[[], Path]
    recorded = run.source_output(step)
    if recorded is None:
        source, location = run.input_path, str(run.input_path)
    else:
        location = str(recorded["path"])
        # Fetched when the action first reads ctx.source_path (a step that never opens
        # its source, such as finalize_job, fetches nothing for it).
        source = objects.known_copy(recorded) or functools.partial(read, recorded)
    return ActionContext(
        job_code=handle.job_code, step_number=step.number, step_name=step.name,
        input_path=run.input_path, source_path=source, source_location=location,
        params=params, staging_dir=stage_dir, attempt=retry_attempt,
        deadline=min(step_deadline, run.job_deadline),
        cancel_event=handle.stop_signal, on_progress=on_progress,
        on_log=handle.log, previous_outputs=objects.with_local_paths(run.outputs),
        workflow_code=run.context["workflow_code"],
        input_roots=settings.storage.effective_input_roots,
        library_roots=settings.storage.effective_library_roots,
        needs_outputs=readable_needs(objects, run.needs_outputs(step)),
        item_index=item.index, resolve_output=read,
        submit_files=functools.partial(submit_found_files, handle.pool,
                                       found_by=f"scan:{handle.job_code}"),
    )


def output_reader(objects: ObjectStorage, job_code: str, step: Step,
                  item: Item) -> Callable[[dict[str, Any]], Path]:
    """``ActionContext.local_path``: an earlier output as a path here, fetched through
    the cache only when the action asks for it (what it reads, not all the job made);
    the cache's ``cache:downloaded`` lines then name the job and the step."""
    def local_path(output: dict[str, Any]) -> Path:
        here = objects.known_copy(output)
        if here is not None:
            return here
        with structlog.contextvars.bound_contextvars(
                job_code=job_code, step=step.number,
                **({"item": item.index} if item.index is not None else {})):
            return objects.local_copy(str(output["path"]), {"outputs": [output]})
    return local_path


def readable_needs(objects: ObjectStorage, needs: dict[str, Any]) -> dict[str, Any]:
    """The results of the needed steps, each output with ``local_path`` where this host
    already has it (nothing is fetched: a fan-in's items may have run on other hosts, an
    action asks for what it reads through ``ActionContext.local_path``)."""
    def readable(result: Any) -> Any:
        if isinstance(result, list):  # a fanned-out step: one result per item
            return [readable(r) for r in result]
        if not isinstance(result, dict) or not result.get("outputs"):
            return result
        return {**result, "outputs": objects.with_local_paths(list(result["outputs"]))}
    return {name: readable(result) for name, result in needs.items()}
