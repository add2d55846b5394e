"""What a step's outputs become in the run: their names in the job folder, their
descriptions in ``output_data``, and what the steps after them read.

Pure bookkeeping over ``JobRun`` (the files are published by the fenced commit,
``JobHandle.commit_step``); where an output lives, locally or in object storage, is
``mediaq.storage``'s to say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mediaq.actions import ActionResult
from mediaq.outputs import sha256_of
from mediaq.storage.remote import ObjectStorage
from mediaq.worker.job_run import Item, JobRun, Step


def keep_earlier_outputs(run: JobRun, step: Step, item: Item, result: ActionResult) -> None:
    """Rename staged files that would replace another step's (or item's) output in the
    job folder (a retry of the same step replaces its own, as it should)."""
    taken = {Path(o["path"]).name for o in run.outputs
             if (o.get("step"), o.get("item")) != (step.number, item.index)}
    suffix = f"_step{step.number}" + (f"_item{item.index + 1}" if item.index is not None
                                      else "")
    for output in result.outputs:
        if output.staging_path.name in taken:
            path = output.staging_path
            renamed = path.with_name(f"{path.stem}{suffix}{path.suffix}")
            path.rename(renamed)
            output.staging_path = renamed


def describe_outputs(objects: ObjectStorage, result: ActionResult, output_dir: Path,
                     step: Step, item: Item, seconds: float, job_code: str) -> dict[str, Any]:
    """The step's ``output_data``: what the action said, and each output at its final
    location with its size and SHA-256."""
    outputs = []
    for out in result.outputs:
        name = out.staging_path.name
        final = (str(objects.final_uri(job_code, name))
                 if objects.output_root is not None
                 else objects.path_map.to_canonical(output_dir / name))
        outputs.append({
            "path": final,
            "role": out.role,
            "size_bytes": out.staging_path.stat().st_size,
            "sha256": sha256_of(out.staging_path),
            "step": step.number,
            **({"item": item.index} if item.index is not None else {}),
            **out.meta,
        })
    primary = next((o["path"] for o in outputs if o["role"] == "primary"), None)
    return {**result.data, "outputs": outputs, "primary": primary,
            "seconds": round(seconds, 3)}


def remember_outputs(objects: ObjectStorage, run: JobRun, step: Step, item: Item,
                     output_data: dict[str, Any], fresh: bool = False) -> None:
    """What a finished step (item) gave: the job's outputs, the result the steps that
    need it see, and its primary output (the source of the steps after it)."""
    outputs = output_data.get("outputs", [])
    run.outputs.extend(outputs)
    if fresh:  # just committed here: this host's copies need no second hashing
        for output in outputs:
            objects.trust_local_copy(output)
    if item.index is None:
        run.results[step.number] = output_data
        primary = output_data.get("primary")
        record = next((o for o in outputs if o.get("path") == primary), None)
        if primary:
            # Only where it is recorded: fetched (if it lives in a store) by the step
            # that opens it as its source (step_context), not by every step after it.
            run.primaries[step.number] = record or {"path": primary}
    else:
        items = run.results.setdefault(step.number, [None] * item.count)
        items[item.index] = output_data


def forget_outputs(run: JobRun, step: Step, item: Item) -> None:
    """Undo ``remember_outputs`` for a result the database refused."""
    if item.index is None:
        run.results.pop(step.number, None)
        run.primaries.pop(step.number, None)
    elif isinstance(run.results.get(step.number), list):
        run.results[step.number][item.index] = None
