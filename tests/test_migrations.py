"""schema.sql and the revisions build the same schema.

A new database gets mediaq/sql/schema.sql (stamped at head); an existing one gets the
revisions after its own. Both databases are compared through the catalog: tables and
columns, constraints, indexes, functions, triggers, views, sequences, types, comments,
privileges, the rows of the job state machine's tables and the Alembic version (as
procrastinate's tests/migration do).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from mediaq import migrate
from mediaq.queries import parse_queries
from tests.conftest import scratch_database

CATALOG = parse_queries(
    (Path(__file__).resolve().parent / "data" / "catalog_snapshot.sql").read_text("utf-8"))

# Constraints that a revision added NOT VALID (rows older than the revision are not
# checked); schema.sql declares them in CREATE TABLE, validated: a new database has no
# older rows to exempt. The snapshot compares their definitions without " NOT VALID".
NOT_VALID_AFTER_REVISIONS = {("workflow_jobs", "input_file_path_absolute_without_dot_dot")}

Snapshot = dict[str, list[str]]


def snapshot(url: str) -> Snapshot:
    """Per catalog query, its rows as sorted lines (order of creation does not count)."""
    found: Snapshot = {}
    with psycopg.connect(url) as conn:
        conn.execute("SET search_path = mediaq, public")
        for name, statement in CATALOG.items():
            cur = conn.execute(statement)
            columns = [d.name for d in cur.description or []]
            rows = []
            for row in cur.fetchall():
                fields = dict(zip(columns, row, strict=True))
                if name == "constraints":
                    fields["definition"] = str(fields["definition"]).removesuffix(" NOT VALID")
                    del fields["convalidated"]
                rows.append(" | ".join(f"{k}={v}" for k, v in fields.items()))
            # one object a row; a multi-line definition (a function) becomes lines that
            # each start with its object's name, so a diff shows the line that changed
            found[name] = [f"{row.split(' | ', 1)[0]}: {line}" if i else line
                           for row in sorted(rows) for i, line in enumerate(row.splitlines())]
    return found


def not_valid_constraints(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        conn.execute("SET search_path = mediaq, public")
        rows = conn.execute(CATALOG["constraints"]).fetchall()
    return {(relation, name) for relation, name, _, _, valid in rows if not valid}


def snapshot_diff(a: Snapshot, b: Snapshot, a_name: str, b_name: str) -> str:
    """A unified diff per catalog query that differs; empty when the schemas agree."""
    parts = []
    for name in sorted(a.keys() | b.keys()):
        left, right = a.get(name, []), b.get(name, [])
        if left != right:
            parts.append("\n".join(difflib.unified_diff(
                left, right, f"{a_name}: {name}", f"{b_name}: {name}", lineterm="", n=0)))
    return "\n\n".join(parts)


@pytest.fixture(scope="module")
def built(server_url: str) -> Iterator[tuple[str, str]]:
    """(a database built from schema.sql, one built by every revision from empty)."""
    with scratch_database(server_url, None) as from_file, \
            scratch_database(server_url, None) as by_revisions:
        migrate.upgrade(from_file)
        migrate.upgrade(by_revisions, revisions_only=True)
        yield from_file, by_revisions


def test_schema_file_and_revisions_build_the_same_schema(built: tuple[str, str]) -> None:
    from_file, by_revisions = built
    # each database took its own path: only the revisions leave a NOT VALID constraint
    assert not_valid_constraints(from_file) == set()
    assert not_valid_constraints(by_revisions) == NOT_VALID_AFTER_REVISIONS

    a, b = snapshot(from_file), snapshot(by_revisions)
    assert a["alembic_version"] == [f"version_num={migrate.head_revision()}"]
    assert len(a["functions"]) > 25 and len(a["views"]) > 15 and len(a["triggers"]) > 10
    diff = snapshot_diff(a, b, "schema.sql", "revisions")
    assert not diff, "schema.sql and the revisions disagree:\n" + diff


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


@pytest.mark.parametrize("change, seen", [
    ("CREATE OR REPLACE FUNCTION mediaq.queue_status_for(job_status text) RETURNS text"
     " SET search_path = pg_catalog, mediaq LANGUAGE sql IMMUTABLE"
     " AS $$ SELECT job_status $$", "queue_status_for"),
    ("ALTER TABLE mediaq.queues ALTER COLUMN paused SET DEFAULT TRUE", "paused"),
], ids=["function body", "column default"])
def test_the_comparison_sees_one_changed_object(server_url: str, built: tuple[str, str],
                                                change: str, seen: str) -> None:
    from_file, _ = built
    with scratch_database(server_url, database_name(from_file)) as changed:
        with psycopg.connect(changed, autocommit=True) as conn:
            conn.execute(change)
        diff = snapshot_diff(snapshot(from_file), snapshot(changed), "schema.sql", "changed")
    assert diff
    changed_lines = [line for line in diff.splitlines()
                     if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))]
    assert changed_lines and all(seen in line for line in changed_lines[:2]), diff


def test_a_database_at_the_previous_revision_upgrades_to_the_same_schema(
        server_url: str, built: tuple[str, str]) -> None:
    from alembic.script import ScriptDirectory

    head = migrate.head_revision()
    script = ScriptDirectory.from_config(migrate.alembic_config(""))
    previous = script.get_revision(head).down_revision
    assert isinstance(previous, str)
    from_file, by_revisions = built
    with scratch_database(server_url, None) as url:
        assert migrate.upgrade(url, previous) == (None, previous)
        # not new any more: the revisions after its own, not schema.sql
        assert migrate.upgrade(url) == (previous, head)
        assert not_valid_constraints(url) == not_valid_constraints(by_revisions)
        diff = snapshot_diff(snapshot(from_file), snapshot(url), "schema.sql", "upgraded")
    assert not diff, diff


def test_a_failing_schema_file_leaves_no_half_built_schema(
        server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "schema.sql"
    broken.write_text(migrate.SCHEMA_FILE.read_text("utf-8") + "\nSELECT 1/0;\n", "utf-8")
    monkeypatch.setattr(migrate, "SCHEMA_FILE", broken)
    with scratch_database(server_url, None) as url:
        with pytest.raises(Exception, match="division by zero"):
            migrate.upgrade(url)
        with psycopg.connect(url) as conn:  # no table, and no version stamp
            assert conn.execute(CATALOG["relations"]).fetchall() == []
        monkeypatch.undo()
        assert migrate.upgrade(url) == (None, migrate.head_revision())
