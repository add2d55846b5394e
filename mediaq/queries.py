"""Named SQL statements, loaded from the files named in ``QUERY_FILES`` under ``mediaq/sql/``.

Each statement follows a ``-- name: NAME`` line (and a one-line description),
as procrastinate does; code refers to them as ``queries["task_claim_next"]``.
"""

from __future__ import annotations

import re
from pathlib import Path

# Inside the package, so that an installed wheel carries it.
SQL_DIR = Path(__file__).resolve().parent / "sql"

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a queries file into ``{name: statement}``."""
    parts = _NAME_LINE.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"query {name!r} is defined twice")
        statement = "\n".join(
            line for line in body.strip().splitlines() if not line.startswith("-- ")
        ).strip()
        found[name] = statement.rstrip(";").strip()
    return found


QUERY_FILES = ("queries.sql", "triggers.sql", "reports.sql", "web.sql", "catalog.sql")


def load_queries(paths: tuple[Path, ...] | None = None) -> dict[str, str]:
    """Every file's statements in one mapping; a name may appear only once in all."""
    files = paths or tuple(SQL_DIR / name for name in QUERY_FILES)
    return parse_queries("\n".join(path.read_text(encoding="utf-8") for path in files))


queries: dict[str, str] = load_queries()
