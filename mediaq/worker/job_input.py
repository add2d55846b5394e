"""The job's input as a local file: checked against the input roots, an ``s3://`` object
fetched through this host's cache, a shared mount through the path map."""

from __future__ import annotations

from pathlib import Path

from mediaq.actions import get_action
from mediaq.config import Settings
from mediaq.errors import ActionNotAvailable
from mediaq.outputs import check_input
from mediaq.storage.remote import ObjectStorage
from mediaq.storage.uri import check_s3_input, is_s3
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.job_run import JobRun, Step


def local_input(objects: ObjectStorage, settings: Settings, handle: JobHandle, run: JobRun,
                *, held: list[str]) -> Path:
    """The job's input as a local path: an ``s3://`` object fetched through this host's
    cache (a ``downloading`` stage; its cache entry pinned in ``held`` while the job
    runs), a local path through the path map. InputRefused or PermanentError say why
    it cannot be; TransientError that the store did not answer."""
    text = str(run.context["input_file_path"])
    if not is_s3(text):
        return check_input(objects.path_map.to_local(text),
                           settings.storage.effective_input_roots,
                           kind=_input_kind(run.order[0].action))
    uri = check_s3_input(text, settings.storage.bucket_input_roots)
    at = run.percent(first_unfinished(run), done=False)
    handle.progress(at, "downloading", force=True)
    path = objects.fetch(uri, lambda f, stage: handle.progress(at, stage), held=held)
    handle.progress(at, None, force=True)
    return path


def first_unfinished(run: JobRun) -> Step:
    """The first step, in graph order, that no attempt has completed."""
    return next((s for s in run.order
                 if not (run.history.get((s.id, None)) or {}).get("completed")),
                run.order[0])


def _input_kind(first_action: str) -> str:
    """What the job's input must be: a folder when the first step scans one."""
    try:
        return get_action(first_action).input_kind
    except ActionNotAvailable:
        return "file"  # the step itself fails with the clear message
