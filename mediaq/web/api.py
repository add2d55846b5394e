"""The job API: /api/media/jobs (list, show, create, change priority,
retry/cancel/pause/resume, stats, retry/cancel by a filter) and /api/media/dead-letters."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from mediaq import db, download_links, operations
from mediaq.job_filter import parse_filter
from mediaq.outputs import check_input
from mediaq.states import ACTIVE
from mediaq.storage.setup import check_submitted, presigner
from mediaq.storage.uri import is_s3
from mediaq.submit import submit
from mediaq.web import serialise
from mediaq.web.auth import Principal, get_conn, require

router = APIRouter(prefix="/api/media/jobs", tags=["jobs"])
dead_letters_router = APIRouter(prefix="/api/media", tags=["jobs"])

Conn = Annotated[db.Connection, Depends(get_conn, scope="function")]
Viewer = Annotated[Principal, Depends(require("viewer"))]
Submitter = Annotated[Principal, Depends(require("submitter", kind="submit"))]
Operator = Annotated[Principal, Depends(require("operator"))]

# JobStatus values, and "running" for processing (tests/test_job_transitions.py checks).
Status = Literal["pending", "queued", "processing", "running", "completed", "failed",
                 "cancelled", "paused"]
Category = Literal["cpu", "gpu_encode", "gpu_ai"]
Text = Annotated[str, Field(min_length=1, max_length=200)]


class JobCreate(BaseModel):
    """The body of ``POST /api/media/jobs``; ``type`` is the workflow code, ``inputPath`` the
    input file. ``resourceCategory`` and ``vramRequired`` come from the workflow and are
    ignored here."""

    model_config = ConfigDict(extra="ignore")

    type: Text
    inputPath: Annotated[str, Field(min_length=1, max_length=4096)]
    priority: Annotated[int, Field(ge=1, le=10)] | None = None
    params: dict[Text, dict[Text, Any]] = Field(default_factory=dict)
    metadata: dict[Text, Any] | None = None
    notify: Annotated[list[Annotated[str, Field(min_length=1, max_length=500)]],
                      Field(max_length=20)] = Field(default_factory=list)
    idempotencyKey: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class JobChange(BaseModel):
    """The body of ``PATCH /api/media/jobs/{job_id}``: a waiting job's new priority.

    ``priority`` is 1..10 and 10 is the most urgent, as everywhere in mediaq. A client
    whose convention is the reverse (1 the most urgent) says so with
    ``"priorityOrder": "lowest-first"``: its 1 is stored as 10, 2 as 9, …, 10 as 1
    (stored = 11 - priority). Responses always use mediaq's order."""

    model_config = ConfigDict(extra="forbid")

    priority: Annotated[int, Field(strict=True, description=(
        "1..10; 10 is the most urgent, unless priorityOrder is lowest-first"))]
    priorityOrder: Literal["highest-first", "lowest-first"] = Field(
        "highest-first", description=(
            "highest-first (default): 10 is the most urgent. lowest-first: 1 is the most "
            "urgent, and the priority is stored as 11 - priority (1 -> 10, 10 -> 1)."))


class BulkChange(BaseModel):
    """The body of ``POST /api/media/jobs/retry`` and ``/cancel``: every job ``where``
    matches (the filter language of ``mediaq retry --where``, see mediaq/job_filter.py).
    ``dryRun``: count and sample only; ``note``: written in each job's log line."""

    model_config = ConfigDict(extra="forbid")

    where: Annotated[str, Field(min_length=1, max_length=2000)]
    dryRun: bool = False
    note: Annotated[str, Field(max_length=500)] | None = None


@dead_letters_router.get("/dead-letters")
def dead_letters(conn: Conn, _: Viewer,
                 where: Annotated[str | None, Query(max_length=2000)] = None) -> dict[str, Any]:
    """Failed jobs grouped by workflow, step, error class and normalised reason (the
    message with job codes, paths, file names, numbers, hex ids and times replaced by
    placeholders), largest group first; ``where``: only the jobs this filter matches."""
    groups = operations.dead_letter_groups(conn, parse_filter(where) if where else None)
    return {"total": sum(g["count"] for g in groups),
            "data": [serialise.dead_letter_group(g) for g in groups]}


@router.post("/retry")
def retry_jobs(body: BulkChange, conn: Conn, who: Operator) -> dict[str, Any]:
    """Retry every failed job ``where`` matches (500 per savepoint, committed with the
    request); returns ``matched``, ``changed``, ``skipped`` and a ``sample`` of job codes.
    A job retried meanwhile is skipped, so the same request again changes nothing."""
    result = operations.retry_where(conn, parse_filter(body.where), by=who.name or who.role,
                                    note=body.note, dry_run=body.dryRun)
    return serialise.bulk(result)


@router.post("/cancel")
def cancel_jobs(body: BulkChange, conn: Conn, who: Operator) -> dict[str, Any]:
    """Cancel every waiting (pending, queued, paused) job ``where`` matches (since/until:
    the submission time); the same counts as ``POST /api/media/jobs/retry``."""
    result = operations.cancel_where(conn, parse_filter(body.where), by=who.name or who.role,
                                     note=body.note, dry_run=body.dryRun)
    return serialise.bulk(result)


@router.get("")
def list_jobs(
    conn: Conn, _: Viewer,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
    status: Status | None = None,
    type: Annotated[str | None, Query(max_length=50)] = None,
    resourceCategory: Category | None = None,
) -> dict[str, Any]:
    """Jobs, newest first, one page at a time (``status=running`` means processing)."""
    filters = {"status": "processing" if status == "running" else status,
               "workflow_code": type, "category": resourceCategory}
    found = db.fetch_all(conn, "jobs_api_list",
                         {**filters, "limit": limit, "offset": (page - 1) * limit})
    if found:
        total = int(found[0]["total"])
    else:
        row = db.fetch_one(conn, "jobs_api_count", filters)
        total = int(row["total"]) if row else 0
    return {"data": [serialise.job(r) for r in with_etas(conn, found)],
            "pagination": {"page": page, "limit": limit, "total": total,
                           "totalPages": math.ceil(total / limit)}}


@router.get("/stats")
def job_stats(conn: Conn, _: Viewer) -> dict[str, Any]:
    """Counts per status, VRAM used/available, average processing time, jobs per type."""
    return serialise.stats(operations.stats(conn))


@router.get("/{job_id}")
def show_job(job_id: str, request: Request, conn: Conn, who: Viewer) -> dict[str, Any]:
    """One job (by code or numeric id) with its log, steps and ``outputs``: each output
    with a ``url``, a signed download link that expires (``web.link_ttl_seconds``) and
    stops working when this token is revoked or the job is deleted."""
    return _detail(conn, job_id, request, who)


@router.patch("/{job_id}")
def change_job(job_id: str, body: JobChange, request: Request, conn: Conn,
               who: Operator) -> dict[str, Any]:
    """Change a waiting (pending, queued or paused) job's priority; returns the job.

    ``{"priority": 8}``: 10 is the most urgent. ``{"priority": 1, "priorityOrder":
    "lowest-first"}``: 1 is the most urgent, stored as 10 (stored = 11 - priority).
    A priority outside 1..10 is refused (400); a processing or finished job cannot
    change (409)."""
    operations.set_priority(conn, job_id, body.priority, by=who.name or who.role,
                            lowest_first=body.priorityOrder == "lowest-first")
    return _detail(conn, job_id, request, who)


LIVE = ACTIVE


def with_etas(conn: db.Connection, rows: list[db.Row]) -> list[db.Row]:
    """The rows with the ETAs of the waiting and running ones (from the job_etas view)."""
    live = [row["id"] for row in rows if row["status"] in LIVE]
    if not live:
        return rows
    etas = {e["job_id"]: e for e in db.fetch_all(conn, "jobs_api_etas", {"job_ids": live})}
    return [{**row, **etas.get(row["id"], {})} for row in rows]


def _detail(conn: db.Connection, ref: str, request: Request,
            who: Principal) -> dict[str, Any]:
    [row] = with_etas(conn, [operations.find_job(conn, ref)])
    steps = db.fetch_all(conn, "job_steps_detail",
                         {"job_id": row["id"], "workflow_id": row["workflow_id"]})
    out = serialise.job({**row, "total_steps": len(steps)})
    out["log"] = row["log"]
    out["steps"] = [serialise.step(s) for s in steps]
    outputs = (row.get("output_metadata") or {}).get("outputs", [])
    out["outputs"] = serialise.plain(signer(conn, row, request, who).outputs(outputs)
                                     if outputs else [])
    return out


def signer(conn: db.Connection, job: db.Row, request: Request,
           who: Principal) -> download_links.Signer:
    """Signs this job's links for this token, on the address the client used (or
    ``web.public_url``)."""
    settings = request.app.state.settings
    base = settings.web.public_url or str(request.base_url)
    return download_links.Signer.for_job(conn, job, who.token_id, settings.storage.outputs,
                                         base, settings.web.link_ttl_seconds,
                                         presigner(settings.storage),
                                         download_links.remote_root_of(
                                             settings.storage.remote_output_root))


@router.post("", status_code=201)
def create_job(body: JobCreate, request: Request, conn: Conn,
               who: Submitter) -> dict[str, Any]:
    """Submit a file to a workflow; the same ``idempotencyKey`` returns the same job."""
    roots: tuple[Path, ...] = request.app.state.settings.storage.effective_input_roots
    kind = "directory" if _is_dir(body.inputPath) else "file"  # a folder for a scan workflow
    storage = request.app.state.settings.storage
    resolved: Path | str = (check_submitted(body.inputPath, storage) if is_s3(body.inputPath)
                            else check_input(body.inputPath, roots, kind=kind))
    row = submit(conn, body.type, resolved, priority=body.priority, params=body.params,
                 metadata=body.metadata, notify=body.notify,
                 idempotency_key=body.idempotencyKey,
                 submitted_by=f"api:{who.name or who.token_id}")
    return {"id": row["job_code"], "numericId": row["id"], "type": body.type,
            "status": row["status"], "progress": float(row.get("progress_percent") or 0),
            "createdAt": serialise.plain(row.get("submitted_at"))}


def _is_dir(path: str) -> bool:
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):  # NUL bytes, names too long: check_input says why
        return False


def _operate(conn: db.Connection, job_id: str, who: Principal, verb: str) -> dict[str, Any]:
    act = {"retry": operations.retry, "cancel": operations.cancel,
           "pause": operations.pause, "resume": operations.resume}[verb]
    act(conn, job_id, by=who.name or who.role)
    row = operations.find_job(conn, job_id)
    return {"id": row["job_code"], "status": row["status"], "retryCount": row["retry_count"],
            "retryAfter": serialise.plain(row["retry_after"]), "log": row["log"],
            "cancelRequested": row["cancel_requested"],
            "pauseRequested": row["pause_requested"]}


@router.delete("/{job_id}")
def delete_job(job_id: str, conn: Conn, who: Operator) -> dict[str, Any]:
    """Cancel a job (as ``POST /api/media/jobs/{job_id}/cancel``): a waiting one at once,
    a running one within seconds; the job's row and history stay (``mediaq prune``
    deletes finished jobs). A finished job cannot be cancelled (409)."""
    return _operate(conn, job_id, who, "cancel")


@router.post("/{job_id}/retry")
def retry_job(job_id: str, conn: Conn, who: Operator) -> dict[str, Any]:
    """Send a failed or cancelled job back to the queue."""
    return _operate(conn, job_id, who, "retry")


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, conn: Conn, who: Operator) -> dict[str, Any]:
    """Cancel a waiting job at once; a running one stops within seconds."""
    return _operate(conn, job_id, who, "cancel")


@router.post("/{job_id}/pause")
def pause_job(job_id: str, conn: Conn, who: Operator) -> dict[str, Any]:
    """Hold a job back (a running one at its next step boundary)."""
    return _operate(conn, job_id, who, "pause")


@router.post("/{job_id}/resume")
def resume_job(job_id: str, conn: Conn, who: Operator) -> dict[str, Any]:
    """Let a paused job run again."""
    return _operate(conn, job_id, who, "resume")
