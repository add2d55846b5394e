"""An ASGI middleware around the whole app: a request id for every request, the
security headers on every response, and a problem answer for anything unhandled.

Pure ASGI rather than ``@app.middleware("http")``: streamed answers (server-sent
events, downloads) and streamed request bodies (uploads) pass through untouched.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediaq.web.errors import PROBLEM, problem_body

log = structlog.get_logger("mediaq.web")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# media-src/worker-src blob:: hls.js and dash.js feed the <video> through a MediaSource
# object URL (and hls.js demuxes in a blob worker). style-src 'unsafe-inline':
# wavesurfer.js styles its shadow DOM with a <style> element; scripts stay 'self' only.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; media-src 'self' blob:; worker-src 'self' blob:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
# A client's own id is kept when it looks like one (a proxy's, a tracing id); anything
# else could forge log lines.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _CLIENT_ID.match(text) else None
    return None


class RequestIds:
    """Binds ``request_id`` for structlog, sends it back as ``X-Request-Id``, adds the
    security headers (a response's own Cache-Control wins over ``no-store``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        tokens = structlog.contextvars.bind_contextvars(request_id=rid)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = rid
                for key, value in SECURITY_HEADERS.items():
                    headers[key] = value
                headers["Content-Security-Policy"] = CSP
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("web:unhandled", path=scope.get("path"))
            if started:
                raise
            await _send_problem(send_with_headers, problem_body(
                500, "internal error", scope.get("path")))
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


async def _send_problem(send: Send, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": body["status"],
                "headers": [(b"content-type", PROBLEM.encode()),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
