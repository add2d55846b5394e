"""The documents in docs/ agree with the code: the state diagram with the database,
and every link between the documents and the README resolves."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

from mediaq.queries import queries

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
STATE_MACHINE = DOCS / "state-machine.md"
# A transition line of a mermaid stateDiagram: `from --> to : label`.
_TRANSITION = re.compile(r"^\s*(\[\*\]|\w+)\s*-->\s*(\[\*\]|\w+)\s*(?::\s*(.*))?$")
# SQL that moves jobs without being a named statement (functions, the column default).
NOT_NAMED_STATEMENTS = {"submit_job", "after_attempt"}


def diagram_transitions() -> list[tuple[str, str, str]]:
    """(from, to, label) of every arrow in the state diagram's mermaid block."""
    text = STATE_MACHINE.read_text(encoding="utf-8")
    blocks = re.findall(r"```mermaid\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 1 and "stateDiagram" in blocks[0]
    found = []
    for line in blocks[0].splitlines():
        match = _TRANSITION.match(line)
        if match:
            found.append((match.group(1), match.group(2), match.group(3) or ""))
    return found


def database_job_states(url: str) -> set[str]:
    """The values workflow_jobs.status may hold: an enum's labels, or its CHECK's list."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT t.oid, t.typtype FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = 'mediaq.workflow_jobs'::regclass AND a.attname = 'status'"
        ).fetchone()
        assert row is not None
        type_oid, kind = row
        if kind == "e":
            return {label for (label,) in conn.execute(
                "SELECT enumlabel FROM pg_enum WHERE enumtypid = %s", (type_oid,))}
        definitions = [d for (d,) in conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'mediaq.workflow_jobs'::regclass AND contype = 'c'")]
    # The list of allowed values (`status IN (…)`, shown as `= ANY (ARRAY[…])`), not
    # other checks that mention one status, such as the owner of a processing job.
    lists = [d for d in definitions if re.search(r"\bstatus\b[^,]*(= ANY|\bIN\b)", d)]
    assert len(lists) == 1, definitions
    return set(re.findall(r"'([^']+)'", lists[0]))


def test_the_state_diagram_has_exactly_the_states_the_database_allows(
        database_url: str) -> None:
    transitions = diagram_transitions()
    drawn = {state for a, b, _ in transitions for state in (a, b)} - {"[*]"}
    assert drawn == database_job_states(database_url)
    # Every state is reachable from submission and every non-final one can be left.
    entered = {b for a, b, _ in transitions if a != b}
    left = {a for a, b, _ in transitions if a != b and b != "[*]"}
    assert entered >= drawn
    assert drawn - left == {"completed"}


def test_every_statement_on_an_arrow_exists() -> None:
    named = set()
    for _, _, label in diagram_transitions():
        named.update(re.findall(r"\b[a-z]+(?:_[a-z]+)+\b", label))
    assert named, "the arrows name no statements"
    missing = named - set(queries) - NOT_NAMED_STATEMENTS
    assert not missing, f"docs/state-machine.md names statements that do not exist: {missing}"


def test_links_between_the_documents_resolve() -> None:
    for document in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = document.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (document.parent / target).exists(), f"{document.name} links to {target}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("architecture.md", "state-machine.md", "operations.md"):
        assert f"(docs/{name})" in readme, name
