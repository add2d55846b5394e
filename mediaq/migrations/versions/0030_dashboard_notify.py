"""The dashboard's wake-up: a statement-level trigger on workflow_jobs sends one NOTIFY
on 'mediaq_dashboard' when a job's shown state changes (mediaq web fans it out).

Revision ID: 0030
Revises: 0027
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from mediaq.migrate import run_schema_file

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_schema_file(op.get_bind(), "0030_dashboard_notify.sql")


def downgrade() -> None:
    raise NotImplementedError("mediaq migrations go forward only; restore a backup instead")
