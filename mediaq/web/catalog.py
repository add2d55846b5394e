"""The rest of the API: workflows, notifications, queues and VRAM, analytics."""

from __future__ import annotations

import datetime as dt
import importlib
from types import ModuleType
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from mediaq import db, workflows
from mediaq.errors import WorkflowError
from mediaq.notify import outbox
from mediaq.web import masking, serialise
from mediaq.web.auth import Principal, get_conn, require

router = APIRouter(prefix="/api/media")

Conn = Annotated[db.Connection, Depends(get_conn, scope="function")]
Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]


class WorkflowSource(BaseModel):
    """A workflow document as YAML or JSON text (what the dashboard's editor sends)."""

    source: Annotated[str, Field(min_length=1, max_length=200_000)]


@router.get("/workflows", tags=["workflows"])
def list_workflows(conn: Conn, _: Viewer) -> dict[str, Any]:
    """Current workflows with their step and job counts."""
    return {"data": serialise.rows(db.fetch_all(conn, "workflows_list"))}


@router.get("/workflows/{code}", tags=["workflows"])
def show_workflow(code: str, conn: Conn, _: Viewer) -> dict[str, Any]:
    """The current version of a workflow, as a document and as YAML text (notify
    recipients masked)."""
    doc = serialise.plain(masking.masked(workflows.export(conn, code)))
    return {"workflow": doc, "source": yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)}


@router.post("/workflows", tags=["workflows"])
def apply_workflow(body: WorkflowSource, conn: Conn, _: Admin) -> dict[str, Any]:
    """Create a workflow or apply a new version (jobs keep the version they started with)."""
    try:
        doc = yaml.safe_load(body.source)
    except yaml.YAMLError as exc:
        raise HTTPException(400, f"not valid YAML or JSON ({type(exc).__name__})") from None
    doc = masking.unmasked(doc, _current(conn, doc))
    result = workflows.apply(conn, workflows.normalise(doc, "workflow"))
    return {"workflowCode": result.workflow_code, "version": result.version,
            "changed": result.changed}


def _current(conn: db.Connection, doc: Any) -> dict[str, Any] | None:
    code = doc.get("workflow_code") if isinstance(doc, dict) else None
    if not isinstance(code, str):
        return None
    try:
        return workflows.export(conn, code)
    except WorkflowError:
        return None


@router.get("/notifications", tags=["notifications"])
def list_notifications(
    conn: Conn, _: Viewer,
    status: Literal["pending", "sending", "sent", "failed"] | None = None,
    job: Annotated[str | None, Query(max_length=50)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """The notification outbox, newest first (recipients with secrets masked)."""
    rows = outbox.list_notifications(conn, status=status, job_code=job, limit=limit)
    for row in rows:
        row["endpoint"] = outbox.shown_recipient(row.get("endpoint") or "")
    return {"data": serialise.rows(rows)}


@router.post("/notifications/{notification_id}/retry", tags=["notifications"])
def retry_notification(notification_id: Annotated[int, Path(ge=1, le=2**62)], conn: Conn,
                       _: Operator) -> dict[str, Any]:
    """Send a failed row again now (same event id; re-enables a disabled endpoint)."""
    outbox.retry(conn, notification_id)
    return {"id": notification_id, "status": "pending"}


@router.get("/queues", tags=["queues"])
def queues(conn: Conn, _: Viewer) -> dict[str, Any]:
    """The queue monitor (jobs waiting and processing per queue, the ``queue_monitor``
    view) and each machine's VRAM."""
    return {"queues": serialise.rows(db.fetch_all(conn, "queue_monitor")),
            "hosts": serialise.rows(db.fetch_all(conn, "hosts_vram"))}


def _analytics() -> ModuleType | None:
    try:
        return importlib.import_module("mediaq.analytics")
    except ImportError:
        return None


@router.get("/analytics/{name}", tags=["analytics"])
def analytics(name: Annotated[str, Path(max_length=50)], conn: Conn, _: Viewer,
              since: Annotated[str | None, Query(max_length=40)] = None) -> dict[str, Any]:
    """One of the workflow-operations reports (steps, workflows, cycle-time, sla, rework,
    in-flight, dead-letters); ``since``: an ISO date or date-time, or an age (7d, 12h)."""
    module = _analytics()
    if module is None or name not in module.REPORTS:
        raise HTTPException(404, f"no analytics report named {name!r}")
    start: dt.datetime | None = module.parse_since(since) if since else None
    rows = module.report(conn, name, since=start)
    return {"name": name, "data": serialise.rows(list(rows))}
