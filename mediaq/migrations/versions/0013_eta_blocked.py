"""No ETA for a job no live worker can run: job_etas gives such a waiting job no
estimated start or finish and says why in a new last column, eta_blocked_reason.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from mediaq.migrate import run_schema_file

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_schema_file(op.get_bind(), "0013_eta_blocked.sql")


def downgrade() -> None:
    raise NotImplementedError("mediaq migrations go forward only; restore a backup instead")
