"""Schema migrations (Alembic), and the check that refuses an outdated schema.

A database without a mediaq schema gets ``sql/schema.sql`` (the whole current schema)
in one transaction, and Alembic's version table is stamped at the newest revision, as
procrastinate does; a database at an older revision gets the revisions after it, each
running its delta from ``migrations/sql/``. tests/test_migrations.py proves both paths
build the same schema.
"""

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

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SCHEMA_FILE = SQL_DIR / "schema.sql"
_REVISION = re.compile(r'^revision\s*=\s*"([^"]+)"', re.MULTILINE)
_DOWN_REVISION = re.compile(r'^down_revision\s*=\s*"([^"]+)"', re.MULTILINE)


def alembic_config(url: str, *, revisions_only: bool = False) -> Config:
    """Alembic's configuration; ``revisions_only`` builds even a new database revision by
    revision instead of from schema.sql (read by migrations/env.py)."""
    from alembic.config import Config  # imported on demand: it is slow, and rarely needed

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["mediaq_url"] = url
    cfg.attributes["mediaq_revisions_only"] = revisions_only
    return cfg


def _run_sql_file(bind: Any, path: Path) -> None:
    """Run a file of several statements on a SQLAlchemy connection's driver connection.

    Raw driver execution: the files hold several statements, colons and percent signs.
    """
    dbapi = bind.connection.dbapi_connection
    assert dbapi is not None
    with dbapi.cursor() as cur:
        cur.execute(path.read_text(encoding="utf-8"))


def run_schema_file(bind: Any, name: str) -> None:
    """Run ``migrations/sql/<name>``, a revision's delta, on a migration's connection
    (Alembic's ``op.get_bind()``)."""
    _run_sql_file(bind, MIGRATIONS_DIR / "sql" / name)


def apply_schema(bind: Any) -> None:
    """Run schema.sql, the whole current schema, on a connection in a transaction."""
    _run_sql_file(bind, SCHEMA_FILE)


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


def upgrade(url: str, target: str = "head", *,
            revisions_only: bool = False) -> tuple[str | None, str | None]:
    """Bring the schema to ``target`` (idempotent); (before, after).

    A new database gets schema.sql stamped at head (unless ``revisions_only``, or a
    target other than head: schema.sql is the head's schema only).
    """
    from alembic import command

    before = current_revision(url)
    command.upgrade(alembic_config(url, revisions_only=revisions_only or target != "head"),
                    target)
    return before, current_revision(url)


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
