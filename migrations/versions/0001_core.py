"""Core schema: seed 000's tables, the engine's columns, workers, slots, triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "sql" / "schema"


def _run_sql_file(name: str) -> None:
    # Raw driver execution: the files hold several statements, colons and percent signs.
    dbapi = op.get_bind().connection.dbapi_connection
    assert dbapi is not None
    with dbapi.cursor() as cur:
        cur.execute((SCHEMA_DIR / name).read_text(encoding="utf-8"))


def upgrade() -> None:
    _run_sql_file("0001_core.sql")
    _run_sql_file("0001_functions.sql")


def downgrade() -> None:
    op.execute("DROP SCHEMA mediaq CASCADE")
