"""Analytics reports: the analytics views of ``mediaq/sql/schema.sql`` by name.

``report(conn, "cycle-time", since)`` is what ``mediaq report`` prints and what the
HTTP API serves at ``/api/media/analytics/{name}``. Every value is JSON-ready apart
from timestamps (``datetime``): numbers are ``int`` or ``float``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from mediaq import db
from mediaq.errors import ReportRefused
from mediaq.queries import queries

REPORTS: tuple[str, ...] = (
    "steps", "workflows", "cycle-time", "sla", "rework", "in-flight", "dead-letters", "eta",
)
QUERY_OF_REPORT: dict[str, str] = {
    "steps": "report_steps",
    "workflows": "report_workflows",
    "cycle-time": "report_cycle_time",
    "sla": "report_sla",
    "rework": "report_rework",
    "in-flight": "report_in_flight",
    "dead-letters": "report_dead_letters",
    "eta": "eta_accuracy",
}
TITLES: dict[str, str] = {
    "steps": "Step performance (queue wait vs run time)",
    "workflows": "Workflow analytics",
    "cycle-time": "Cycle time per stage",
    "sla": "SLA miss rate per stage",
    "rework": "Rework loops per stage",
    "in-flight": "In-flight stages",
    "dead-letters": "Dead letters",
    "eta": "Estimates against actuals (median absolute error per workflow)",
}
UNITS: dict[str, timedelta] = {
    "m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")


def query_name(name: str) -> str:
    """The named query behind a report; ReportRefused for an unknown report."""
    try:
        return QUERY_OF_REPORT[name]
    except KeyError:
        raise ReportRefused(
            f"unknown report {name!r}: choose one of {', '.join(REPORTS)}") from None


def run(conn: db.Connection, name: str,
        since: datetime | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """A report's column names and rows."""
    cur = conn.execute(queries[query_name(name)], {"since": since})
    columns = [column.name for column in cur.description or ()]
    return columns, cur.fetchall()


def report(conn: db.Connection, name: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """The rows of report ``name`` (one of REPORTS), over history since ``since``
    (all of it when None)."""
    return run(conn, name, since)[1]


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d``, ``12h``, ``30m``, ``2w`` before now, or an ISO date or date-time
    (local time unless it names its zone)."""
    value = text.strip()
    if match := _RELATIVE.match(value.lower()):
        start = now or datetime.now().astimezone()
        return start - int(match.group(1)) * UNITS[match.group(2)]
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ReportRefused(
            f"--since {text!r}: expected a date (2026-11-01), a date-time "
            "(2026-11-01T08:00) or an age (30m, 12h, 7d, 2w)") from None
    return parsed if parsed.tzinfo else parsed.astimezone()
