"""``GET /api/media/jobs/{job_id}/progress``: a job's progress as a small JSON object,
or, with ``Accept: text/event-stream``, as server-sent events until the job finishes.

The stream reads one indexed row about once a second on a pooled connection taken
only for that read, so a thousand watchers hold no connection between reads; it sends
an event only when something changed, and a comment line every 15 s keeps proxies
from closing a quiet stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from mediaq import db
from mediaq.errors import JobNotFound
from mediaq.states import TERMINAL
from mediaq.web import serialise
from mediaq.web.auth import Principal, require

router = APIRouter(prefix="/api/media/jobs", tags=["jobs"])
Viewer = Annotated[Principal, Depends(require("viewer"))]

POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
EVENT_STREAM = "text/event-stream"

PROGRESS_EXAMPLE = {"id": "JOB-2026-000001", "numericId": 1, "status": "processing",
                    "progress": 42.5, "progressStage": "encode 720p", "currentStep": 2,
                    "totalSteps": 4, "errorMessage": None, "startedAt": None,
                    "completedAt": None, "updatedAt": "2026-12-05T04:00:00+00:00"}


def read_progress(pool: Any, ref: str) -> dict[str, Any] | None:
    numeric = int(ref) if ref.isdigit() and len(ref) < 19 else None
    with pool.connection() as conn:
        row = db.fetch_one(conn, "job_progress_api", {"code": ref, "id": numeric})
    return shape(row) if row else None


def shape(row: dict[str, Any]) -> dict[str, Any]:
    return serialise.record({
        "id": row["job_code"], "numericId": row["id"], "status": row["status"],
        "progress": float(row.get("progress_percent") or 0),
        "progressStage": row.get("progress_stage"), "currentStep": row.get("current_step"),
        "totalSteps": row.get("total_steps"), "errorMessage": row.get("error_message"),
        "startedAt": row.get("started_at"), "completedAt": row.get("completed_at"),
        "updatedAt": row.get("updated_at")})


@router.get("/{job_id}/progress", response_model=None, responses={200: {
    "description": "The job's progress; with `Accept: text/event-stream`, a stream of "
                   "`progress` events (each `data:` line is this object), then one "
                   "`end` event once the job has finished.",
    "content": {"application/json": {"example": PROGRESS_EXAMPLE},
                EVENT_STREAM: {"schema": {"type": "string"},
                               "example": "event: progress\nid: 1\ndata: {...}\n\n"}}}})
def job_progress(job_id: str, request: Request, _: Viewer) -> Response:
    """A job's status and progress (cheap to poll); ``Accept: text/event-stream``: as
    server-sent events until it finishes."""
    pool = request.app.state.pool
    first = read_progress(pool, job_id)
    if first is None:
        raise JobNotFound(f"job {job_id} does not exist")
    if EVENT_STREAM not in request.headers.get("accept", ""):
        return JSONResponse(first)
    return StreamingResponse(_events(pool, job_id, first), media_type=EVENT_STREAM,
                             headers={"Cache-Control": "no-cache",
                                      "X-Accel-Buffering": "no"})


async def _events(pool: Any, ref: str, first: dict[str, Any]) -> AsyncIterator[str]:
    current: dict[str, Any] | None = first
    sent, number, quiet_since = "", 0, time.monotonic()
    yield "retry: 2000\n\n"
    while current is not None:
        data = json.dumps(current, separators=(",", ":"))
        if data != sent:
            number += 1
            sent, quiet_since = data, time.monotonic()
            yield f"event: progress\nid: {number}\ndata: {data}\n\n"
        elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        if current["status"] in TERMINAL:
            yield f"event: end\ndata: {data}\n\n"
            return
        await asyncio.sleep(POLL_SECONDS)
        current = await run_in_threadpool(read_progress, pool, ref)
    yield 'event: gone\ndata: {"detail":"the job was deleted"}\n\n'
