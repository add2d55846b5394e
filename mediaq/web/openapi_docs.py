"""The OpenAPI document, completed: every operation's errors are RFC 9457 problems
(``application/problem+json``, the ``Problem`` schema), and 429 answers carry
``Retry-After``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "An RFC 9457 problem; requestId is also in the X-Request-Id header "
                   "and in the server's log lines for this request.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer"}, "detail": {"type": "string"},
        "instance": {"type": "string"}, "requestId": {"type": "string"}},
}
ERRORS = {"400": "Bad request", "401": "No valid token", "403": "Role too low, or the "
          "link refused", "404": "Not found", "409": "Conflict with the current state",
          "422": "Invalid parameters", "429": "Rate limited: see Retry-After"}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = \
            PROBLEM_SCHEMA
        problem = {"application/problem+json": {
            "schema": {"$ref": "#/components/schemas/Problem"}}}
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                for code, text in ERRORS.items():
                    entry = responses.setdefault(code, {"description": text})
                    entry["content"] = problem
                responses["429"]["headers"] = {"Retry-After": {
                    "description": "Seconds until a request may succeed",
                    "schema": {"type": "integer"}}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
