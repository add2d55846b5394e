"""Adding and removing watch folders and schedules (the CLI's and the API's path)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from mediaq import db
from mediaq.config import Settings
from mediaq.errors import SubmissionRefused
from mediaq.outputs import check_input
from mediaq.storage.setup import check_watched_prefix
from mediaq.storage.uri import is_s3
from mediaq.triggers.schedules import MISSED_POLICIES, next_slot, zone


def add_watch_folder(conn: db.Connection, settings: Settings, path: Path | str,
                     workflow_code: str, *, patterns: tuple[str, ...] = (),
                     priority: int | None = None, settle_seconds: int = 10,
                     recursive: bool = False, params: dict[str, Any] | None = None) -> db.Row:
    """Store a watch folder after checking what a worker would refuse later. ``path``
    may be a bucket prefix (``s3://bucket/prefix/``) inside a bucket-prefix input root."""
    folder: Path | str
    if is_s3(path):
        folder = check_watched_prefix(str(path), settings.storage)
    else:
        folder = check_input(str(path), settings.storage.effective_input_roots,
                             kind="directory")
    _check_workflow(conn, workflow_code)
    _check_priority(priority)
    if settle_seconds < 0:
        raise SubmissionRefused("--settle-seconds must not be negative")
    try:
        with conn.transaction():
            row = db.fetch_one(conn, "watch_folder_add", {
                "path": str(folder), "workflow_code": workflow_code, "patterns": list(patterns),
                "priority": priority, "settle_seconds": settle_seconds, "recursive": recursive,
                "params": Jsonb(params or {})})
    except psycopg.errors.UniqueViolation:
        raise SubmissionRefused(f"{folder} is watched for {workflow_code} already") from None
    assert row is not None
    return row


def add_schedule(conn: db.Connection, settings: Settings, cron: str, workflow_code: str,
                 input_path: str, *, timezone: str = "UTC", priority: int | None = None,
                 missed: str = "catch-up", params: dict[str, Any] | None = None) -> db.Row:
    """Store a cron schedule; its first slot is the next one from now."""
    if missed not in MISSED_POLICIES:
        raise SubmissionRefused(f"--missed must be one of {', '.join(MISSED_POLICIES)}")
    zone(timezone)
    first = next_slot(cron, timezone, datetime.now(UTC))
    _check_workflow(conn, workflow_code)
    _check_priority(priority)
    kind = "directory" if Path(input_path).is_dir() else "file"
    checked = check_input(input_path, settings.storage.effective_input_roots, kind=kind)
    row = db.fetch_one(conn, "schedule_add", {
        "cron": cron, "timezone": timezone, "workflow_code": workflow_code,
        "input_path": str(checked), "params": Jsonb(params or {}), "priority": priority,
        "missed": missed, "next_run_at": first})
    assert row is not None
    return row


def remove(conn: db.Connection, query: str, item_id: int, what: str) -> None:
    if db.fetch_one(conn, query, {"id": item_id}) is None:
        raise SubmissionRefused(f"no {what} #{item_id}")


def _check_workflow(conn: db.Connection, workflow_code: str) -> None:
    workflow = db.fetch_one(conn, "workflow_current", {"workflow_code": workflow_code})
    if workflow is None:
        raise SubmissionRefused(f"workflow {workflow_code} does not exist")
    if not workflow["is_active"]:
        raise SubmissionRefused(f"workflow {workflow_code} is disabled")


def _check_priority(priority: int | None) -> None:
    if priority is not None and not 1 <= priority <= 10:
        raise SubmissionRefused(f"priority {priority} is outside 1..10")
