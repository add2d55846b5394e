"""Schema migrations (Alembic), and the check that refuses an outdated schema."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from mediaq.errors import SchemaOutdated
from mediaq.queries import SQL_DIR, queries

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_REVISION = re.compile(r'^revision\s*=\s*"([^"]+)"', re.MULTILINE)
_DOWN_REVISION = re.compile(r'^down_revision\s*=\s*"([^"]+)"', re.MULTILINE)


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # imported on demand: it is slow, and rarely needed

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["mediaq_url"] = url
    return cfg


def run_schema_file(bind: Any, name: str) -> None:
    """Run ``sql/schema/<name>`` on a migration's connection (Alembic's ``op.get_bind()``).

    Raw driver execution: the files hold several statements, colons and percent signs.
    """
    dbapi = bind.connection.dbapi_connection
    assert dbapi is not None
    with dbapi.cursor() as cur:
        cur.execute((SQL_DIR / "schema" / name).read_text(encoding="utf-8"))


@cache
def head_revision() -> str:
    """The newest revision, read from the migration files (without importing Alembic,
    which every CLI command would otherwise pay for)."""
    revisions, parents = set(), set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        if match := _REVISION.search(text):
            revisions.add(match.group(1))
        parents.update(_DOWN_REVISION.findall(text))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have exactly one head, found {sorted(heads)}")
    return heads.pop()


def current_revision(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        try:
            row = conn.execute(queries["schema_version"]).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return str(row[0]) if row else None


def upgrade(url: str) -> tuple[str | None, str]:
    """Bring the schema to the newest revision (idempotent); (before, after)."""
    from alembic import command

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
