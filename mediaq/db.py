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
POOL_WAIT_SECONDS = 10.0


def database_url(settings: Settings) -> str:
    """The server to use: MEDIAQ_DATABASE_URL, or the embedded one (started on demand)."""
    if settings.database.url:
        return settings.database.url
    return embedded.ensure_running(settings.storage.home)


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
    that would hide its jobs from the rescuers).

    Its connections are in autocommit: ``transaction()`` blocks say BEGIN and COMMIT
    themselves, and a lone statement (``fetch_one_now``) is its own transaction in one
    round trip instead of three."""
    options = CONNECT_OPTIONS
    if idle_in_transaction_ms:
        options += f" -c idle_in_transaction_session_timeout={idle_in_transaction_ms}"
    return ConnectionPool(
        url,
        min_size=1,
        max_size=size,
        kwargs={
            "autocommit": True,
            "row_factory": dict_row,
            "options": options,
            "application_name": application,
        },
        connection_class=psycopg.Connection,
        open=True,
        # With the server gone, a wait for a connection fails after this long (the
        # callers' retry loops take over) instead of the pool's default of 30 s.
        timeout=POOL_WAIT_SECONDS,
    )


@contextmanager
def transaction(pool: ConnectionPool[Connection],
                timeout: float | None = None) -> Iterator[Connection]:
    """A short transaction on a pooled connection (committed on success); ``timeout``:
    how long to wait for a connection (the pool's own limit when None)."""
    with pool.connection(timeout=timeout) as conn, conn.transaction():
        yield conn


def fetch_one_now(pool: ConnectionPool[Connection], name: str,
                  params: dict[str, Any] | None = None) -> Row | None:
    """One statement on a pooled connection, committed by itself (see ``make_pool``)."""
    with pool.connection() as conn:
        return fetch_one(conn, name, params)


def fetch_one(conn: Connection, name: str, params: dict[str, Any] | None = None) -> Row | None:
    return conn.execute(queries[name], params or {}).fetchone()


def fetch_all(conn: Connection, name: str, params: dict[str, Any] | None = None) -> list[Row]:
    return conn.execute(queries[name], params or {}).fetchall()


def execute(conn: Connection, name: str, params: dict[str, Any] | None = None) -> int:
    """Run a named statement; the number of rows it touched."""
    return conn.execute(queries[name], params or {}).rowcount
