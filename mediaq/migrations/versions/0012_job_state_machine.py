"""The job state machine in the database: the states and the moves as rows, and a trigger
that refuses any other move of workflow_jobs.status.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from mediaq.migrate import run_schema_file

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_schema_file(op.get_bind(), "0012_job_state_machine.sql")


def downgrade() -> None:
    raise NotImplementedError("mediaq migrations go forward only; restore a backup instead")
