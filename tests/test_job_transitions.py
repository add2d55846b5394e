"""The job state machine, defined once in the database: the states (job_statuses), the
moves (job_status_transitions) and the trigger that refuses every other move of
workflow_jobs.status, whoever makes it (here: plain SQL, as from psql).

Also: mediaq.states.JobStatus and the status lists of the CLI, the API and the dashboard
agree with the database, every statement that writes a job's status is named in the
transitions table, and the mermaid drawing of the machine (mediaq.states.mermaid) agrees
with the one in docs/state-machine.md.

That the list holds every move the engine makes is shown by the suites that drive the
engine (test_state_machine, test_lifecycle, test_submit, test_cli_operating, test_dedupe,
test_autoscale, chaos/test_faults): a move missing from the table fails them with
"illegal job status transition".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from mediaq.operations import WAITING
from mediaq.queries import queries
from mediaq.states import (
    ACTIVE,
    CLAIMABLE,
    INITIAL,
    TERMINAL,
    JobStatus,
    Transition,
    as_transitions,
    mermaid,
    mermaid_edges,
    statements_of,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "state-machine.md"
APP_JS = ROOT / "mediaq" / "web" / "static" / "app.js"
STATES = [s.value for s in JobStatus]

Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row,
                         options="-c search_path=mediaq,public") as connection:
        yield connection


@pytest.fixture
def workflow_id(conn: Conn) -> int:
    """A workflow as SQL from outside the engine makes one (its jobs never run here)."""
    row = conn.execute("INSERT INTO workflow_definitions (workflow_code, workflow_name)"
                       " VALUES ('T-TRANSITIONS', 'transitions') RETURNING id").fetchone()
    assert row is not None
    return int(row["id"])


def insert_job(conn: Conn, workflow_id: int, status: str) -> int:
    """A job inserted in ``status`` (an INSERT is no move: it is not checked)."""
    row = conn.execute("INSERT INTO workflow_jobs (workflow_id, input_file_path, status)"
                       " VALUES (%s, '/in/x.jpg', %s) RETURNING id",
                       (workflow_id, status)).fetchone()
    assert row is not None
    return int(row["id"])


def transitions(conn: Conn) -> list[Transition]:
    return as_transitions(conn.execute(queries["job_status_transitions"]).fetchall())


def legal_pairs(conn: Conn) -> set[tuple[str, str]]:
    return {(t.from_status, t.to_status) for t in transitions(conn)}


# ---------------------------------------------------------------------------------------
# The trigger
# ---------------------------------------------------------------------------------------

def test_completed_to_processing_is_refused_naming_both_states(conn: Conn,
                                                               workflow_id: int) -> None:
    job_id = insert_job(conn, workflow_id, "completed")
    with pytest.raises(psycopg.errors.CheckViolation,
                       match=r"illegal job status transition: completed -> processing") as info:
        conn.execute("UPDATE workflow_jobs SET status = 'processing' WHERE id = %s", (job_id,))
    diag = info.value.diag
    assert info.value.sqlstate == "23514"
    assert diag.constraint_name == "workflow_jobs_status_transition"
    assert (diag.schema_name, diag.table_name, diag.column_name) == (
        "mediaq", "workflow_jobs", "status")
    assert diag.message_detail is not None and "is completed" in diag.message_detail
    assert diag.message_hint is not None and "job_status_transitions" in diag.message_hint
    # nothing was written: neither the job nor what the AFTER triggers keep in step
    assert conn.execute("SELECT status FROM workflow_jobs WHERE id = %s",
                        (job_id,)).fetchone() == {"status": "completed"}
    assert conn.execute("SELECT status FROM media_queue WHERE job_id = %s",
                        (job_id,)).fetchone() == {"status": "completed"}


def test_a_legal_move_and_a_status_written_unchanged_pass(conn: Conn, workflow_id: int) -> None:
    job_id = insert_job(conn, workflow_id, "completed")
    conn.execute("UPDATE workflow_jobs SET status = 'completed', log = 'again' WHERE id = %s",
                 (job_id,))
    job_id = insert_job(conn, workflow_id, "failed")
    conn.execute("UPDATE workflow_jobs SET status = 'pending' WHERE id = %s", (job_id,))
    assert conn.execute("SELECT status FROM media_queue WHERE job_id = %s",
                        (job_id,)).fetchone() == {"status": "queued"}


def test_an_unknown_state_is_refused_too(conn: Conn, workflow_id: int) -> None:
    job_id = insert_job(conn, workflow_id, "pending")
    with pytest.raises(psycopg.errors.CheckViolation, match="pending -> finished"):
        conn.execute("UPDATE workflow_jobs SET status = 'finished' WHERE id = %s", (job_id,))


def test_an_update_succeeds_exactly_when_its_move_is_listed(conn: Conn,
                                                            workflow_id: int) -> None:
    """Random (from, to) pairs, from plain SQL: the UPDATE passes iff the pair is in
    job_status_transitions or the status is unchanged; other columns changed in the same
    statement make no difference."""
    legal = legal_pairs(conn)

    @hypothesis_settings(max_examples=150, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(old=st.sampled_from(STATES), new=st.sampled_from(STATES),
           also=st.sampled_from(["", ", priority = 9", ", log = log || 'x'",
                                 ", attempt = attempt + 1, worker_id = 'w'"]))
    def check(old: str, new: str, also: str) -> None:
        with conn.transaction(force_rollback=True):
            job_id = insert_job(conn, workflow_id, old)
            try:
                with conn.transaction():
                    conn.execute(f"UPDATE workflow_jobs SET status = %s{also} WHERE id = %s",
                                 (new, job_id))
                passed = True
            except psycopg.errors.CheckViolation as exc:
                assert str(exc).startswith(f"illegal job status transition: {old} -> {new}")
                passed = False
            assert passed == (old == new or (old, new) in legal), (old, new, also)
            status = conn.execute("SELECT status FROM workflow_jobs WHERE id = %s",
                                  (job_id,)).fetchone()
            assert status == {"status": new if passed else old}

    check()


# ---------------------------------------------------------------------------------------
# The states, in the database and in Python
# ---------------------------------------------------------------------------------------

def check_constraint_states(conn: Conn) -> set[str]:
    """The values the CHECK on workflow_jobs.status allows."""
    rows = conn.execute(
        "SELECT pg_get_constraintdef(c.oid) AS definition FROM pg_constraint c"
        " WHERE c.conrelid = 'mediaq.workflow_jobs'::regclass AND c.contype = 'c'"
        "   AND pg_get_constraintdef(c.oid) LIKE '%%(status)::text = ANY%%'").fetchall()
    assert len(rows) == 1, rows
    return set(re.findall(r"'(\w+)'::character varying", rows[0]["definition"]))


def test_the_enum_is_the_database_states(conn: Conn) -> None:
    rows = conn.execute("SELECT status, terminal FROM job_statuses").fetchall()
    assert {r["status"] for r in rows} == set(STATES) == check_constraint_states(conn)
    assert {r["status"] for r in rows if r["terminal"]} == set(TERMINAL)
    assert {s for s in JobStatus if s.terminal} == set(TERMINAL)
    assert {s for s in JobStatus if s.active} == set(ACTIVE)
    assert {s for s in JobStatus if s.claimable} == set(CLAIMABLE) <= set(ACTIVE)
    default = conn.execute(
        "SELECT pg_get_expr(d.adbin, d.adrelid) AS expr FROM pg_attrdef d"
        "  JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
        " WHERE d.adrelid = 'mediaq.workflow_jobs'::regclass AND a.attname = 'status'"
    ).fetchone()
    assert default is not None and f"'{INITIAL}'" in default["expr"]


def test_the_machine_is_connected(conn: Conn) -> None:
    """Every state is reachable from the initial one, and a job that is not completed
    can always get back to pending (through an operator if need be)."""
    moves = legal_pairs(conn)

    def reachable(start: str) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            here = todo.pop()
            for a, b in moves:
                if a == here and b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    assert reachable(INITIAL) == set(STATES)
    assert {s for s in STATES if INITIAL not in reachable(s)} == {"completed"}
    # terminal states are never left by a worker: only job_retry leaves them
    for t in transitions(conn):
        if JobStatus(t.from_status).terminal:
            assert statements_of(t.description) == ["job_retry"], t


def status_writers() -> set[str]:
    """The named statements that write workflow_jobs.status."""
    writes = re.compile(r"UPDATE\s+(?:mediaq\.)?workflow_jobs\b[^;]*?\bSET\s+status\s*=",
                        re.IGNORECASE)
    return {name for name, sql in queries.items() if writes.search(sql)}


def test_every_statement_that_moves_a_job_is_named_by_its_moves(conn: Conn) -> None:
    named = {name for t in transitions(conn) for name in statements_of(t.description)}
    assert named <= set(queries), named - set(queries)
    assert status_writers() == named
    assert {"task_claim_next", "job_complete", "job_retry", "jobs_rescue_expired"} <= named


def test_the_status_lists_of_the_cli_the_api_and_the_dashboard(conn: Conn) -> None:
    from mediaq.cli import job_commands, render
    from mediaq.web import api

    assert set(job_commands.TERMINAL) == set(TERMINAL)
    assert set(get_args(api.Status)) == set(STATES) | {"running"}  # running: processing
    assert set(api.LIVE) == set(ACTIVE)
    assert set(render.STATUS_STYLE) == set(STATES)

    script = APP_JS.read_text(encoding="utf-8")
    block = re.search(r"const ACTIONS = \{(.*?)\};", script, re.DOTALL)
    assert block is not None
    actions = {state: set(re.findall(r'"(\w+)"', acts))
               for state, acts in re.findall(r"(\w+): \[([^\]]*)\]", block.group(1))}
    assert set(actions) == set(STATES)
    # the buttons offer what the database lets an operator do from that state
    moves = transitions(conn)
    for verb, statement in (("retry", "job_retry"), ("resume", "job_resume")):
        assert {s for s, acts in actions.items() if verb in acts} == {
            t.from_status for t in moves if statement in statements_of(t.description)}
    assert not any(t.from_status == "completed" for t in moves) and not actions["completed"]
    # the -/+ priority buttons show where job_set_priority_if_waiting lets a priority change
    waiting = re.search(r"const REPRIORITISABLE = \[([^\]]*)\]", script)
    assert waiting is not None
    assert set(re.findall(r'"(\w+)"', waiting.group(1))) == set(WAITING)
    guards = re.findall(r"status IN \(([^)]*)\)", queries["job_set_priority_if_waiting"])
    assert guards and all(set(re.findall(r"'(\w+)'", g)) == set(WAITING) for g in guards)


# ---------------------------------------------------------------------------------------
# The drawing
# ---------------------------------------------------------------------------------------

def test_the_mermaid_drawing_has_every_move(conn: Conn) -> None:
    rows = conn.execute(queries["job_status_transitions"]).fetchall()
    text = mermaid(rows)
    assert text.splitlines()[:2] == ["stateDiagram-v2", "    [*] --> pending"]
    assert mermaid_edges(text) == legal_pairs(conn)
    assert "    processing --> pending : job_schedule_retry, job_hand_back, " \
           "jobs_rescue_expired, job_hand_back_waiting" \
        in text.splitlines()
    assert "    completed --> [*]" in text.splitlines()
    assert mermaid(reversed(rows)) == text  # the order of the rows does not count


def test_the_docs_drawing_agrees_with_the_database(conn: Conn) -> None:
    blocks = re.findall(r"```mermaid\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    drawings = [b for b in blocks if "stateDiagram" in b]
    assert len(drawings) == 1, "docs/state-machine.md should draw the machine once"
    drawn, listed = mermaid_edges(drawings[0]), legal_pairs(conn)
    assert drawn == listed, (f"only in the docs: {sorted(drawn - listed)}; "
                             f"only in the database: {sorted(listed - drawn)}; "
                             f"mediaq.states.mermaid draws:\n{mermaid(transitions(conn))}")


def test_the_examples_in_the_states_module() -> None:
    import doctest

    import mediaq.states

    assert doctest.testmod(mediaq.states).failed == 0
