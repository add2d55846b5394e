"""Circuit breakers on actions and worker storage health over HTTP (issue 25):
``GET /api/media/breakers``, ``POST /api/media/breakers/{action}/close``, and the
``mediaq_action_breaker_open`` gauge of ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from mediaq import breakers, db
from mediaq.web.auth import Principal, get_conn, require

router = APIRouter(prefix="/api/media/breakers", tags=["operations"])

Conn = Annotated[db.Connection, Depends(get_conn, scope="function")]
Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Name = Annotated[str, Query(min_length=1, max_length=200)]


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if hasattr(value, "isoformat") else value
            for key, value in row.items()}


@router.get("")
def list_breakers(conn: Conn, _: Viewer, all: bool = False) -> dict[str, Any]:
    """Breakers that are open or half-open (``all``: closed ones too; ``host`` null: the
    action on every host), and the live workers that do not claim because of their
    storage (``claim_problems``)."""
    return {"data": [_shown(row) for row in breakers.listing(conn, everything=all)],
            "claim_problems": [_shown(row) for row in breakers.claim_problems(conn)]}


@router.post("/{action}/close")
def close_breaker(action: str, conn: Conn, _: Operator,
                  host: Name | None = None) -> dict[str, Any]:
    """Close ``action``'s breakers (on every host, or on ``host`` and the action-wide
    one); the jobs that wait for them may start at once. ``closed``: how many were open."""
    closed = breakers.close(conn, action, host)
    return {"action": action, "closed": len(closed),
            "hosts": [row["host"] or None for row in closed]}


def metrics(conn: db.Connection) -> Iterator[Metric]:
    """``mediaq_action_breaker_open``: 1 while an action's breaker is open or half-open."""
    gauge = GaugeMetricFamily("mediaq_action_breaker_open", "1 while the circuit breaker of "
                              "an action (host '': every host) is open or half-open.",
                              labels=["action", "host"])
    for row in breakers.listing(conn, everything=True):
        gauge.add_metric([row["action"], row["host"] or ""],
                         0 if row["state"] == "closed" else 1)
    yield gauge
