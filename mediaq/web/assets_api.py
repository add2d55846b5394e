"""Read-only API over the media library: /api/media/assets (search) and one asset."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query

from mediaq import catalog, db
from mediaq.web import serialise
from mediaq.web.auth import Principal, get_conn, require

router = APIRouter(prefix="/api/media/assets", tags=["assets"])

Conn = Annotated[db.Connection, Depends(get_conn, scope="function")]
Viewer = Annotated[Principal, Depends(require("viewer"))]


@router.get("")
def list_assets(
    conn: Conn, _: Viewer,
    kind: Annotated[Literal["video", "audio", "image", "document", "other"] | None,
                    Query()] = None,
    orientation: Annotated[Literal["landscape", "portrait", "square"] | None, Query()] = None,
    min_duration: Annotated[float | None, Query(alias="minDuration", ge=0)] = None,
    max_duration: Annotated[float | None, Query(alias="maxDuration", ge=0)] = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    min_score: Annotated[float, Query(alias="minScore", ge=0, le=1)] = 0.0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Assets matching every filter given, newest first, with their tags (best first)."""
    rows = catalog.search(conn, catalog.Filters(
        kind=kind, orientation=orientation, min_duration=min_duration,
        max_duration=max_duration, tag=tag, min_score=min_score, limit=limit))
    return {"data": serialise.rows(rows), "summary": serialise.rows(catalog.summary(conn))}


@router.get("/{asset_id}")
def show_asset(asset_id: int, conn: Conn, _: Viewer) -> dict[str, Any]:
    """One asset: every fact, tags with scores and sources, the jobs that made it."""
    row = catalog.get(conn, asset_id)
    if row is None:
        raise HTTPException(404, f"asset {asset_id} not found")
    return {"asset": serialise.record(row)}
