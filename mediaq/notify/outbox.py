"""The outbox as operators see it: list rows, send one again, endpoint health."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from mediaq import db
from mediaq.errors import Refused

STATUSES = ("pending", "sending", "sent", "failed")


def shown_recipient(recipient: str) -> str:
    """A recipient safe to print: Slack webhook paths are secrets, queries may be too."""
    if recipient.startswith("slack+"):
        parts = urlsplit(recipient.removeprefix("slack+"))
        return f"slack+{parts.scheme}://{parts.netloc}/***"
    if recipient.startswith(("http://", "https://")):
        parts = urlsplit(recipient)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return f"{parts.scheme}://{netloc}{parts.path}" + ("?***" if parts.query else "")
    return recipient


def list_notifications(conn: db.Connection, *, status: str | None = None,
                       job_code: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    if status is not None and status not in STATUSES:
        raise Refused(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
    rows = db.fetch_all(conn, "notifications_list",
                        {"status": status, "job_code": job_code, "limit": limit})
    return [{**row, "recipient": shown_recipient(row["recipient"] or "")} for row in rows]


def retry(conn: db.Connection, notification_id: int) -> None:
    """Send a failed row again now (same event id); re-enable its endpoint if it was
    disabled or held back by its breaker."""
    row = db.fetch_one(conn, "notification_retry", {"id": notification_id})
    if row is None:  # one statement: a missing row and one in another state look alike
        raise Refused(f"notification {notification_id} does not exist or is not "
                      "failed or pending")
    db.execute(conn, "endpoint_reset", {"endpoint": row["endpoint"]})


def health(conn: db.Connection) -> dict[str, Any]:
    """Rows by status and the endpoints whose breakers are not plainly closed."""
    counts = {row["status"]: row["count"] for row in db.fetch_all(conn, "notification_counts")}
    return {
        "notifications": {status: counts.get(status, 0) for status in STATUSES},
        "endpoints": db.fetch_all(conn, "endpoints_unhealthy"),
    }
