"""Connections to PostgreSQL, with ``search_path`` set to the ``mediaq`` schema."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from mediaq import embedded
from mediaq.config import Settings
from mediaq.queries import queries

Row = dict[str, Any]
Connection = psycopg.Connection[Row]

CONNECT_OPTIONS = "-c search_path=mediaq,public"


def database_url(settings: Settings) -> str:
    """The server to use: MEDIAQ_DATABASE_URL, or the embedded one (started on demand)."""
    if settings.database_url:
        return settings.database_url
    return embedded.ensure_running(settings.home)


def connect(url: str, *, autocommit: bool = False, application: str = "mediaq") -> Connection:
    return psycopg.connect(
        url,
        autocommit=autocommit,
        row_factory=dict_row,
        options=CONNECT_OPTIONS,
        application_name=application,
    )


def make_pool(
    url: str, size: int, application: str = "mediaq-worker", idle_in_transaction_ms: int = 0
) -> ConnectionPool[Connection]:
    """A pool for a worker. ``idle_in_transaction_ms``: the server ends a session that
    sits in an open transaction that long (a frozen worker must not keep row locks
    that would hide its jobs from the rescuers)."""
    options = CONNECT_OPTIONS
    if idle_in_transaction_ms:
        options += f" -c idle_in_transaction_session_timeout={idle_in_transaction_ms}"
    return ConnectionPool(
        url,
        min_size=1,
        max_size=size,
        kwargs={
            "row_factory": dict_row,
            "options": options,
            "application_name": application,
        },
        connection_class=psycopg.Connection,
        open=True,
    )


@contextmanager
def transaction(pool: ConnectionPool[Connection]) -> Iterator[Connection]:
    """A short transaction on a pooled connection (committed on success)."""
    with pool.connection() as conn, conn.transaction():
        yield conn


def fetch_one(conn: Connection, name: str, params: dict[str, Any] | None = None) -> Row | None:
    return conn.execute(queries[name], params or {}).fetchone()


def fetch_all(conn: Connection, name: str, params: dict[str, Any] | None = None) -> list[Row]:
    return conn.execute(queries[name], params or {}).fetchall()


def execute(conn: Connection, name: str, params: dict[str, Any] | None = None) -> int:
    """Run a named statement; the number of rows it touched."""
    return conn.execute(queries[name], params or {}).rowcount
