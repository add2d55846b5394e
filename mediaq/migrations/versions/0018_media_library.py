"""The media library catalog: assets, asset_tags, asset_jobs and the asset_library view.

Revision ID: 0018
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from mediaq.migrate import run_schema_file

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_schema_file(op.get_bind(), "0018_media_library.sql")


def downgrade() -> None:
    raise NotImplementedError("mediaq migrations go forward only; restore a backup instead")
