"""Watch folders on bucket prefixes: the version a watch folder submitted may be an
object's ETag (watch_files.etag), one job per (folder, key, ETag) across workers.

Revision ID: 0029
Revises: 0027
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from mediaq.migrate import run_schema_file

revision = "0029"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_schema_file(op.get_bind(), "0029_s3_watch_folders.sql")


def downgrade() -> None:
    raise NotImplementedError("mediaq migrations go forward only; restore a backup instead")
