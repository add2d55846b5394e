"""Outputs published after their step's commit (publications); s3:// asset paths.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from mediaq.migrate import run_schema_file

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_schema_file(op.get_bind(), "0032_publications.sql")


def downgrade() -> None:
    raise NotImplementedError("mediaq migrations go forward only; restore a backup instead")
