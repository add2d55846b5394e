"""Core schema: the original job tables, the engine's columns, workers, slots, triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

from mediaq.migrate import run_schema_file

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_schema_file(op.get_bind(), "0001_core.sql")
    run_schema_file(op.get_bind(), "0001_functions.sql")


def downgrade() -> None:
    op.execute("DROP SCHEMA mediaq CASCADE")
