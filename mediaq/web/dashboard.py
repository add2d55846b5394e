"""The dashboard's own reads: chart series over a range, the Hosts view, a job's files
with signed links (so a player can fetch an HLS/DASH package's playlists and segments),
and the one cheap row that live pages poll. All viewer-level and read-only."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from mediaq import db, gpu_readings, operations
from mediaq import hosts as host_switch
from mediaq.web import live as live_events
from mediaq.web import serialise
from mediaq.web.api import signer
from mediaq.web.auth import Principal, get_conn, require

router = APIRouter(prefix="/api/media", tags=["dashboard"])

Conn = Annotated[db.Connection, Depends(get_conn, scope="function")]
Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]

Range = Literal["hour", "day", "week"]
# (bucket unit, span): a minute a point over an hour, an hour a point over a day or week.
RANGES: dict[str, tuple[str, str]] = {"hour": ("minute", "1 hour"),
                                      "day": ("hour", "1 day"),
                                      "week": ("hour", "7 days")}
MAX_FILES = 5000
"""A job folder listed for the players holds at most this many files (an HLS ladder of a
long film has a few thousand segments); past it the listing is cut and says so."""


@router.get("/dashboard/series")
def series(conn: Conn, _: Viewer, range: Range = "hour") -> dict[str, Any]:
    """The charts' data over the last hour (per minute), day or week (per hour):
    completed/failed jobs, queue depth and oldest waiting age per resource category, VRAM
    in use per host; each point's ``t`` is a Unix time in seconds."""
    unit, span = RANGES[range]
    params = {"unit": unit, "span": span}
    return {"range": range, "unit": unit,
            "throughput": serialise.rows(db.fetch_all(conn, "dash_throughput", params)),
            "queue": serialise.rows(db.fetch_all(conn, "dash_queue_depth", params)),
            "vram": serialise.rows(db.fetch_all(conn, "dash_vram", params))}


@router.get("/dashboard/me")
def me(who: Viewer) -> dict[str, Any]:
    """This token's name and role (the page hides what the role may not do; the API
    refuses it anyway)."""
    return {"name": who.name, "role": who.role}


@router.get("/dashboard/live")
def live(conn: Conn, _: Viewer) -> dict[str, Any]:
    """Jobs per status and the newest change: the one row an open dashboard polls; it
    reloads its view only when ``changedAt`` or a count moves."""
    row = db.fetch_one(conn, "dash_live") or {}
    return serialise.record({**row, "changedAt": row.get("changed_at")})


@router.get("/dashboard/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
def events(request: Request, _: Viewer) -> StreamingResponse:
    """Server-sent events: ``live`` (the ``/dashboard/live`` row and a ``seq`` that moves
    on every change) at once and whenever a job's shown state changes, ``down`` while
    the database is unreachable. Fed by one LISTEN session per web process; the stream
    ends after five minutes and the page opens the next (its token checked again)."""
    hub: live_events.LiveHub = request.app.state.live
    return StreamingResponse(live_events.stream(hub), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/hosts")
def hosts(request: Request, conn: Conn, _: Viewer) -> dict[str, Any]:
    """Each host (VRAM budget and reservation, slots used per category, heartbeat age,
    ``gpus``: its GPUs as its newest live worker last read them through NVML, or why it
    could not) with its workers by id and the steps each runs now; ``nvml``: this web
    server's own machine (``host``) read live, or why that is not possible."""
    workers = serialise.rows(db.fetch_all(conn, "dash_workers"))
    out = []
    for host in serialise.rows(db.fetch_all(conn, "dash_hosts")):
        host["workers"] = [w for w in workers if w["host"] == host["host"]]
        out.append(host)
    nvml = {"host": request.app.state.settings.worker.host_id, **gpu_readings.read_nvml()}
    return {"data": out, "nvml": nvml}


@router.post("/hosts/{host}/pause")
def pause_host(host: str, conn: Conn, who: Operator) -> dict[str, Any]:
    """Stop the host's workers claiming new work (within their 10 s admission check);
    running jobs go on and finish."""
    return serialise.record(host_switch.pause(conn, host, by=f"api:{who.name}"))


@router.post("/hosts/{host}/resume")
def resume_host(host: str, conn: Conn, _: Operator) -> dict[str, Any]:
    """Let the host's workers claim again."""
    host_switch.resume(conn, host)
    return {"host": host, "paused": False}


@router.get("/jobs/{job_id}/files")
def job_files(job_id: str, request: Request, conn: Conn, who: Viewer) -> dict[str, Any]:
    """Every file in the job's output folder (``outputs/<job code>/``), each with a signed
    link for this token: the players map a playlist's relative segment names to these.
    Nothing outside the folder is listed (symbolic links are skipped)."""
    job = operations.find_job(conn, job_id)
    sign = signer(conn, job, request, who)
    folder = sign.output_root / str(job["job_code"])
    files: list[dict[str, Any]] = []
    truncated = False
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            if len(files) >= MAX_FILES:
                truncated = True
                break
            url = sign.url(path)
            if url is not None:
                files.append({"path": path.relative_to(folder).as_posix(), "url": url,
                              "size": path.stat().st_size})
    return {"job": job["job_code"], "files": files, "truncated": truncated}

