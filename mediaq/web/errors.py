"""Every failure becomes a 4xx (or 503) with a one-line JSON body ``{"error": "..."}``."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mediaq.errors import MediaqError
from mediaq.operations import InvalidTransition, JobNotFound


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for item in exc.errors()[:3]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return "bad request: " + "; ".join(problems)


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        return error(exc.status_code, str(exc.detail), headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, _validation_message(exc))

    @app.exception_handler(JobNotFound)
    async def not_found(request: Request, exc: JobNotFound) -> JSONResponse:
        return error(404, exc.message)

    @app.exception_handler(InvalidTransition)
    async def conflict(request: Request, exc: InvalidTransition) -> JSONResponse:
        return error(409, exc.message)

    @app.exception_handler(MediaqError)
    async def refused(request: Request, exc: MediaqError) -> JSONResponse:
        return error(400, exc.message)

    @app.exception_handler(psycopg.OperationalError)
    async def unavailable(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        return error(503, "database unavailable")

    @app.exception_handler(psycopg.Error)
    async def db_refused(request: Request, exc: psycopg.Error) -> JSONResponse:
        detail = exc.diag.message_primary or "invalid value"
        return error(400, f"database refused the request: {detail}")

    @app.exception_handler(OSError)
    async def bad_path(request: Request, exc: OSError) -> JSONResponse:
        return error(400, f"bad path: {exc.strerror or type(exc).__name__}")

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return error(400, f"bad request: {exc}")


def raise_not_found(what: str) -> Any:
    raise HTTPException(404, f"{what} does not exist")
