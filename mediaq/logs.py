"""structlog set-up: constant event names, details in keys, ids bound."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import structlog


def configure(fmt: str = "console", level: str = "info") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def log_stamp() -> str:
    """How a line of a job's ``log`` column starts: ``[YYYY-MM-DD HH:MM:SS]`` (UTC), for
    statements that write the rest of the line themselves."""
    return datetime.now(UTC).strftime("[%Y-%m-%d %H:%M:%S]")


def log_line(message: str) -> str:
    """One line of a job's ``log`` column: ``[YYYY-MM-DD HH:MM:SS] message`` (UTC)."""
    return f"{log_stamp()} {message}\n"
