"""Every failure becomes an RFC 9457 problem: a 4xx or 5xx answered with
``application/problem+json``::

    {"type": "about:blank", "title": "Not Found", "status": 404,
     "detail": "job JOB-1 does not exist", "instance": "/api/media/jobs/JOB-1",
     "requestId": "4f0c…"}

``detail`` is one line; ``requestId`` is the request's id (also the ``X-Request-Id``
response header, and bound to every log line written while the request runs, so a
client's report finds the server's log lines).

mediaq's own errors are mapped by family (see ``mediaq.errors``) in ``FAMILY_STATUS``:
the nearest family in an exception's MRO gives its status, so a new error class gets
its family's status without a line here.
"""

from __future__ import annotations

from http import HTTPStatus
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

PROBLEM = "application/problem+json"


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def request_id() -> str | None:
    """The id of the request being served (bound by ``mediaq.web.request_ids``)."""
    value = structlog.contextvars.get_contextvars().get("request_id")
    return str(value) if value else None


def problem_body(status: int, message: str, instance: str | None = None,
                 **extra: Any) -> dict[str, Any]:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "detail": one_line(message)}
    if instance:
        body["instance"] = instance
    rid = request_id()
    if rid:
        body["requestId"] = rid
    return {**body, **extra}


def error(status: int, message: str, headers: dict[str, str] | None = None,
          request: Request | None = None, **extra: Any) -> JSONResponse:
    """A problem response; logged with the request id (5xx as errors)."""
    body = problem_body(status, message, request.url.path if request else None, **extra)
    (log.error if status >= 500 else log.info)(
        "web:problem", status=status, detail=body["detail"],
        path=request.url.path if request else None)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM)


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
        return error(exc.status_code, str(exc.detail), headers, request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, _validation_message(exc), request=request)

    _install_families(app)

    @app.exception_handler(psycopg.OperationalError)
    async def unavailable(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        return error(503, "database unavailable", request=request)

    @app.exception_handler(psycopg.Error)
    async def db_refused(request: Request, exc: psycopg.Error) -> JSONResponse:
        detail = exc.diag.message_primary or "invalid value"
        return error(400, f"database refused the request: {detail}", request=request)

    @app.exception_handler(OSError)
    async def bad_path(request: Request, exc: OSError) -> JSONResponse:
        return error(400, f"bad path: {exc.strerror or type(exc).__name__}",
                     request=request)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return error(400, f"bad request: {exc}", request=request)


# Each family's status, and why; the nearest one in an exception's MRO wins.
FAMILY_STATUS: dict[type[MediaqError], int] = {
    Refused: 400,         # the caller sent something wrong: a different request may succeed
    NotFound: 404,
    Conflict: 409,        # a right request in the wrong state (cancelling a completed job):
                          # clients should not retry it unchanged
    Unavailable: 503,     # nothing wrong with the request (the schema awaits `mediaq db
                          # upgrade`): load balancers and clients may try again later
    ConfigError: 500,     # the server's own settings are wrong: the operator must act
    PermanentError: 400,  # checks shared with steps (an input outside the roots, invalid
                          # parameters) refuse the request itself
    TransientError: 503,
    MediaqError: 400,     # every class belongs to a family above; a bare one is a refusal
}


def family_status(exc: MediaqError) -> int:
    return next(FAMILY_STATUS[cls] for cls in type(exc).__mro__ if cls in FAMILY_STATUS)


def _install_families(app: FastAPI) -> None:
    @app.exception_handler(MediaqError)
    async def by_family(request: Request, exc: MediaqError) -> JSONResponse:
        if isinstance(exc, ConfigError):
            return error(500, f"server misconfigured: {exc.message}", request=request)
        return error(family_status(exc), exc.message, request=request)

    @app.exception_handler(Interrupt)
    async def interrupt(request: Request, exc: Interrupt) -> JSONResponse:
        # A signal meant for the executor reached a request: a bug, never the caller's
        # fault, so never a 400.
        log.error("web:interrupt_escaped", signal=type(exc).__name__, error=exc.message)
        return error(500, "internal error", request=request)


def raise_not_found(what: str) -> Any:
    raise HTTPException(404, f"{what} does not exist")
