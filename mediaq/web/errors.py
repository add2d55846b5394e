"""Every failure becomes a 4xx or 5xx with a one-line JSON body ``{"error": "..."}``.

mediaq's own errors are mapped by family (see ``mediaq.errors``), one handler each;
Starlette picks the handler of the nearest class in the exception's MRO, so a new
error class gets its family's status without a line here.
"""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mediaq.errors import (
    ConfigError,
    Conflict,
    Interrupt,
    MediaqError,
    NotFound,
    PermanentError,
    Refused,
    TransientError,
    Unavailable,
)

log = structlog.get_logger("mediaq.web")


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

    _install_families(app)

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


def _install_families(app: FastAPI) -> None:
    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        # The caller sent something wrong: a different request may succeed.
        return error(400, exc.message)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return error(404, exc.message)

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        # The request is right but the resource's state forbids it now (e.g. cancelling
        # a completed job): 409 tells clients not to retry it unchanged.
        return error(409, exc.message)

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        # Nothing is wrong with the request (e.g. the schema awaits `mediaq db upgrade`);
        # 503 lets load balancers and clients try again later.
        return error(503, exc.message)

    @app.exception_handler(ConfigError)
    async def misconfigured(request: Request, exc: ConfigError) -> JSONResponse:
        # The server's own settings are wrong: the operator, not the caller, must act.
        return error(500, f"server misconfigured: {exc.message}")

    @app.exception_handler(PermanentError)
    async def step_refused(request: Request, exc: PermanentError) -> JSONResponse:
        # Checks shared with steps (an input outside the roots, invalid parameters)
        # refuse the request itself.
        return error(400, exc.message)

    @app.exception_handler(TransientError)
    async def step_unavailable(request: Request, exc: TransientError) -> JSONResponse:
        return error(503, exc.message)

    @app.exception_handler(MediaqError)
    async def other(request: Request, exc: MediaqError) -> JSONResponse:
        # Every class belongs to a family above; a bare MediaqError is a refusal.
        return error(400, exc.message)

    @app.exception_handler(Interrupt)
    async def interrupt(request: Request, exc: Interrupt) -> JSONResponse:
        # A signal meant for the executor reached a request: a bug, never the caller's
        # fault, so never a 400.
        log.error("web:interrupt_escaped", signal=type(exc).__name__, error=exc.message)
        return error(500, "internal error")


def raise_not_found(what: str) -> Any:
    raise HTTPException(404, f"{what} does not exist")
