"""The FastAPI application: API routers, /healthz, /metrics, /openapi.json, the dashboard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from mediaq import db
from mediaq.config import Settings
from mediaq.web import (
    api,
    breakers,
    catalog,
    downloads,
    errors,
    live,
    maintenance,
    metrics,
    openapi_docs,
    progress,
    uploads,
)
from mediaq.web.assets_api import router as assets_router
from mediaq.web.auth import Limits, Principal, get_conn, require
from mediaq.web.dashboard import router as dashboard_router
from mediaq.web.request_ids import RequestIds

STATIC = Path(__file__).resolve().parent / "static"
MAINTENANCE_SECONDS = 60.0

Viewer = Annotated[Principal, Depends(require("viewer"))]
Conn = Annotated[db.Connection, Depends(get_conn, scope="function")]


def create_app(settings: Settings, url: str, pool_size: int = 8) -> FastAPI:
    """The app, with a connection pool to ``url`` opened at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = db.make_pool(url, pool_size, application="mediaq-web")
        app.state.admit_pool = db.make_pool(url, 4, application="mediaq-web-admit")
        app.state.live = live.LiveHub(url)
        app.state.live.start()
        chores = asyncio.create_task(maintenance.loop(app, MAINTENANCE_SECONDS))
        try:
            yield
        finally:
            chores.cancel()
            app.state.live.stop()
            app.state.admit_pool.close()
            app.state.pool.close()

    app = FastAPI(title="mediaq", version="1", lifespan=lifespan, openapi_url=None,
                  docs_url=None, redoc_url=None,
                  description="The media job API. Send `Authorization: Bearer "
                              "<token>`; tokens come from `mediaq tokens create`.")
    app.state.settings = settings
    app.state.limits = Limits.from_settings(settings)
    errors.install(app)
    app.include_router(progress.router)
    app.include_router(dashboard_router)
    app.include_router(uploads.router)
    app.include_router(downloads.router)
    app.include_router(api.router)
    app.include_router(api.dead_letters_router)
    app.include_router(catalog.router)
    app.include_router(assets_router)
    app.include_router(breakers.router)

    @app.get("/healthz", tags=["service"])
    def healthz(request: Request) -> JSONResponse:
        """No token needed: 200 when the database answers, else 503."""
        try:
            with request.app.state.pool.connection(timeout=5) as conn:
                db.fetch_one(conn, "web_health")
        except Exception:  # any failure to reach the database is "unhealthy"
            return errors.error(503, "database unavailable")
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["service"], response_class=Response)
    def prometheus(request: Request, conn: Conn, _: Viewer) -> Response:
        """Prometheus text exposition (viewer token: Prometheus sends it as a bearer)."""
        body = metrics.exposition(conn, request.app.state.settings)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/openapi.json", tags=["service"])
    def openapi(_: Viewer) -> dict[str, Any]:
        """This API's OpenAPI document."""
        return app.openapi()

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        """The dashboard page: public, holds no data; it asks for a token."""
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(RequestIds)
    openapi_docs.install(app)
    return app
