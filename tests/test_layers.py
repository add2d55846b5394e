"""Layer boundaries: media actions never reach the database or the engine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ACTIONS = sorted((Path(__file__).parent.parent / "mediaq" / "actions").glob("*.py"))
FORBIDDEN = ("psycopg", "psycopg_pool", "sqlalchemy", "mediaq.db", "mediaq.worker",
             "mediaq.queries", "mediaq.operations", "mediaq.cli")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", ACTIONS, ids=lambda p: p.name)
def test_actions_do_not_import_the_database_layer(path: Path) -> None:
    bad = {m for m in imported_modules(path) if m.startswith(FORBIDDEN)}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_there_are_action_modules_to_check() -> None:
    assert {p.name for p in ACTIONS} >= {"base.py", "diagnostic.py", "image.py"}
