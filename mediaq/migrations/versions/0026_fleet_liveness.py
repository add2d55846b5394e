"""Worker liveness by session (an advisory lock per worker, workers.liveness_key) and
targeted wake-up channels (wake_channel(), the job triggers).

Revision ID: 0026
Revises: 0018
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from mediaq.migrate import run_schema_file

revision = "0026"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_schema_file(op.get_bind(), "0026_fleet_liveness.sql")


def downgrade() -> None:
    raise NotImplementedError("mediaq migrations go forward only; restore a backup instead")
