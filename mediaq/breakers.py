"""Circuit breakers on actions and worker storage health, for operators (CLI, API,
/metrics). The workers' side is ``mediaq.worker.breakers`` and
``mediaq.worker.storage_health``."""

from __future__ import annotations

from typing import Any

from mediaq import db

REASON_PREFIX = "circuit breaker of action '{action}'"
"""How every waiting reason a breaker gives starts: a close releases jobs by it."""


def reason_prefix(action: str) -> str:
    return REASON_PREFIX.format(action=action)


def listing(conn: db.Connection, *, everything: bool = False) -> list[dict[str, Any]]:
    """Breakers that are open or half-open (``everything``: closed ones too)."""
    return [dict(row) for row in db.fetch_all(conn, "breakers_list", {"all": everything})]


def close(conn: db.Connection, action: str, host: str | None = None) -> list[db.Row]:
    """Close ``action``'s breakers (on ``host`` and action-wide; None: every host) and
    release the jobs that wait for them; the breakers closed."""
    closed = db.fetch_all(conn, "breakers_close", {"action": action, "host": host})
    if closed:
        db.execute(conn, "jobs_release_breaker_waits", {"prefix": reason_prefix(action)})
    return closed


def claim_problems(conn: db.Connection) -> list[dict[str, Any]]:
    """Live workers that do not claim because of their storage, and why."""
    return [dict(row) for row in db.fetch_all(conn, "workers_claim_problems")]


def workers(conn: db.Connection) -> list[dict[str, Any]]:
    """Workers running, draining, or stopped within a day, with their storage problem."""
    return [dict(row) for row in db.fetch_all(conn, "workers_list")]
