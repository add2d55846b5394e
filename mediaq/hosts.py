"""Pausing a whole host's claims: an operator's switch, read by each of the host's
workers in its admission watch (``mediaq.worker.storage_health``), so it takes effect
within that watch's interval; running jobs go on and finish."""

from __future__ import annotations

from typing import Any

from mediaq import db
from mediaq.errors import NotFound


def pause(conn: db.Connection, host: str, by: str) -> dict[str, Any]:
    row = db.fetch_one(conn, "host_pause", {"host": host, "by": by})
    if row is None:
        raise NotFound(f"host {host} is not known (no worker has registered on it)")
    return dict(row)


def resume(conn: db.Connection, host: str) -> None:
    if db.fetch_one(conn, "host_resume", {"host": host}) is None:
        raise NotFound(f"host {host} is not known (no worker has registered on it)")


def paused_by(conn: db.Connection, host: str) -> str | None:
    """Why this host must not claim (who paused it, since when), or None."""
    row = db.fetch_one(conn, "host_paused", {"host": host})
    if row is None or row["paused_by"] is None:
        return None
    return f"paused by {row['paused_by']} since {row['paused_at']:%Y-%m-%d %H:%M:%S %Z}"
