"""Database rows → the API's JSON shapes (camelCase keys, ISO 8601 times, no secrets)."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

from mediaq.notify.outbox import shown_recipient


def plain(value: Any) -> Any:
    """A JSON-ready value: times as ISO 8601, decimals as numbers."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [record(item) for item in items]


def record(item: dict[str, Any]) -> dict[str, Any]:
    """A row with JSON-ready values."""
    return {str(k): plain(v) for k, v in item.items()}


def job(row: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it (``id`` is the job code; ``type`` the workflow code)."""
    return record({
        "id": row["job_code"],
        "numericId": row["id"],
        "type": row.get("workflow_code"),
        "workflowName": row.get("workflow_name"),
        "status": row["status"],
        "progress": float(row.get("progress_percent") or 0),
        "progressStage": row.get("progress_stage"),
        "currentStep": row.get("current_step"),
        "totalSteps": row.get("total_steps"),
        "resourceCategory": row.get("resource_category"),
        "vramRequired": row.get("vram_required"),
        "priority": row.get("priority"),
        "params": row.get("params") or {},
        "inputPath": row.get("input_file_path"),
        "outputPath": row.get("output_file_path"),
        "retryCount": row.get("retry_count"),
        "maxRetries": row.get("max_retries"),
        "retryAfter": row.get("retry_after"),
        "waitingReason": row.get("waiting_reason"),
        "errorMessage": row.get("error_message"),
        "submittedBy": row.get("submitted_by"),
        "createdAt": row.get("submitted_at"),
        "startedAt": row.get("started_at"),
        "completedAt": row.get("completed_at"),
        "estimatedSeconds": row.get("estimated_seconds"),
        "estimatedStart": row.get("estimated_start"),
        "estimatedFinish": row.get("estimated_finish"),
        # Why a waiting job has no estimated start: no live worker can run it.
        "etaBlockedReason": row.get("eta_blocked_reason"),
    })


def step(row: dict[str, Any]) -> dict[str, Any]:
    return record({
        "stepNumber": row["step_number"], "stepName": row["step_name"],
        "action": row["action"], "onFailure": row["on_failure"], "status": row["status"],
        "retryAttempt": row["retry_attempt"], "executions": row["executions"],
        "startedAt": row["started_at"], "completedAt": row["completed_at"],
        "durationMs": row["duration_ms"], "errorMessage": row["error_message"],
        # the graph: what the step waits for (None: the step before), where it last ran,
        # and a fanned-out step's items
        "needs": row.get("needs"), "workerId": row.get("worker_id"), "host": row.get("host"),
        "items": row.get("items") or None, "itemsCompleted": row.get("items_completed"),
        # its tasks (its items' for a fanned-out step): state, worker, host, attempt and
        # whether it ran in a decode-once pass with its siblings
        "tasks": row.get("tasks") or [],
        # what the step reported (quality scores, scene lists, waveform facts): the job
        # page draws its media panels from it
        "outputData": row.get("output_data"),
    })


def stats(row: dict[str, Any]) -> dict[str, Any]:
    """``operations.stats`` as ``GET /api/media/jobs/stats`` returns it: counts per status,
    VRAM used and available, average processing time, jobs by type and workers, plus
    notifications and unhealthy endpoints."""
    endpoints = [{**e, "endpoint": shown_recipient(e["endpoint"] or "")}
                 for e in row.get("endpoints", [])]
    return record({
        "pending": row["pending"], "queued": row["queued"], "running": row["running"],
        "completed": row["completed"], "failed": row["failed"],
        "cancelled": row["cancelled"], "paused": row["paused"],
        "totalVramUsed": row["total_vram_used"],
        "totalVramAvailable": row["total_vram_available"],
        "averageProcessingTime": row["average_processing_time"],
        "jobsByType": row["jobs_by_type"], "workers": row["workers"],
        "notifications": row.get("notifications", {}),
        "unhealthyEndpoints": endpoints,
    })


def dead_letter_group(group: dict[str, Any]) -> dict[str, Any]:
    """One group of ``operations.dead_letter_groups`` as ``GET /api/media/dead-letters``
    returns it."""
    return record({
        "workflow": group["workflow_code"], "stepNumber": group["step_number"],
        "stepName": group["step_name"], "errorClass": group["error_class"],
        "reason": group["reason"], "count": group["count"],
        "oldestFailure": group["oldest_failure"], "newestFailure": group["newest_failure"],
        "exampleJob": group["example_job"], "exampleMessage": group["example_message"],
    })


def bulk(result: dict[str, Any]) -> dict[str, Any]:
    """``operations.retry_where`` / ``cancel_where`` as the API returns it."""
    return {"filter": result["filter"], "dryRun": result["dry_run"],
            "matched": result["matched"], "changed": result["changed"],
            "skipped": result["skipped"], "sample": result["sample"]}
