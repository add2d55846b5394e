"""Schema migrations (Alembic), and the check that refuses an outdated schema."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from mediaq.errors import SchemaOutdated

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["mediaq_url"] = url
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        try:
            row = conn.execute("SELECT version_num FROM mediaq.alembic_version").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return str(row[0]) if row else None


def upgrade(url: str) -> tuple[str | None, str]:
    """Bring the schema to the newest revision (idempotent); (before, after)."""
    before = current_revision(url)
    command.upgrade(alembic_config(url), "head")
    return before, head_revision()


def require_current_schema(url: str) -> None:
    """Raise SchemaOutdated unless the database is at this mediaq's newest revision."""
    current, head = current_revision(url), head_revision()
    if current is None:
        raise SchemaOutdated("the database has no mediaq schema yet; run `mediaq db upgrade`")
    if current != head:
        raise SchemaOutdated(
            f"the database schema is at revision {current}, this mediaq needs {head}; "
            "run `mediaq db upgrade`"
        )
