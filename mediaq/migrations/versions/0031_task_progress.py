"""Tasks' own progress: the job's progress weighted over its tasks, its current step the
lowest unfinished one; a job whose workflow has no steps gets one step-less task.

Revision ID: 0031
Revises: 0028
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from mediaq.migrate import run_schema_file

revision = "0031"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_schema_file(op.get_bind(), "0031_task_progress.sql")


def downgrade() -> None:
    raise NotImplementedError("mediaq migrations go forward only; restore a backup instead")
