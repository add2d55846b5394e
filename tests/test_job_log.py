"""The job log's cap: an action that logs without end leaves at most 10 KB, its head, a
"… N bytes cut …" line and its newest lines (job_log_append, through JobHandle.log and
every other statement that writes a job's log)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.maintenance.rescuer import rescue_once
from tests.helpers import claim_in_process

CAP = 10240
MARKER = re.compile(r"^… (\d+) bytes cut …$", re.MULTILINE)


def claimed_handle(pool: ConnectionPool[db.Connection], tmp_path_factory: pytest.TempPathFactory
                   ) -> JobHandle:
    """A job of a one-step workflow, claimed by an in-process worker as `mediaq worker` does."""
    source = tmp_path_factory.mktemp("in") / "a.bin"
    source.write_bytes(b"x")
    return claim_in_process(pool, "T-LOG", source, {"action": "noop"})[0]


def stored_log(pool: ConnectionPool[db.Connection], job_id: int) -> str:
    with db.transaction(pool) as conn:
        row = conn.execute("SELECT log FROM mediaq.workflow_jobs WHERE id = %s",
                           (job_id,)).fetchone()
    assert row is not None
    return str(row["log"])


def test_a_log_of_a_thousand_lines_keeps_its_head_its_tail_and_a_marker(
    pool: ConnectionPool[db.Connection], tmp_path_factory: pytest.TempPathFactory
) -> None:
    handle = claimed_handle(pool, tmp_path_factory)
    before = stored_log(pool, handle.job_id)  # the claim's line
    lines = [f"line {i:04d} of a chatty action: {'ü' * (i % 7)}{'x' * 30}" for i in range(1000)]
    written = len(before.encode())
    for line in lines:
        handle.log(line)
    log = stored_log(pool, handle.job_id)
    size = len(log.encode("utf-8"))
    assert size <= CAP, size
    assert log.startswith(before)
    assert lines[0] in log.splitlines()[1]  # the first line the action logged
    assert log.endswith(lines[-1] + "\n")
    markers = MARKER.findall(log)
    assert len(markers) == 1, markers
    # N is every byte dropped, over all the cuts: what was written minus what is kept
    written += sum(len(f"[2026-01-01 00:00:00] {line}\n".encode()) for line in lines)
    marker_line = next(m for m in log.splitlines(keepends=True) if MARKER.match(m.rstrip("\n")))
    assert int(markers[0]) == written - (size - len(marker_line.encode()))
    # whole lines survive on both sides of the marker
    head, _, tail = log.partition(marker_line)
    assert head.endswith("\n") and all(re.match(r"^\[[\d :-]{19}\] ", x)
                                       for x in (head + tail).splitlines())
    assert len(tail.encode()) > 5000  # the newest lines, not a sliver


def test_a_short_log_is_untouched_and_one_huge_line_is_cut_too(
    pool: ConnectionPool[db.Connection], tmp_path_factory: pytest.TempPathFactory
) -> None:
    handle = claimed_handle(pool, tmp_path_factory)
    handle.log("hello")
    assert stored_log(pool, handle.job_id).endswith("] hello\n")
    assert not MARKER.search(stored_log(pool, handle.job_id))
    handle.log("é" * 30000)  # one line of 60 KB
    log = stored_log(pool, handle.job_id)
    assert len(log.encode()) <= CAP and len(MARKER.findall(log)) == 1
    assert "] hello\n" in log and log.endswith("é\n")
    handle.log("after")
    log = stored_log(pool, handle.job_id)
    assert log.endswith("] after\n") and len(MARKER.findall(log)) == 1


def test_every_statement_that_writes_the_log_appends_through_the_cap() -> None:
    sql = "\n".join(p.read_text(encoding="utf-8")
                    for p in (Path(db.__file__).parent / "sql").glob("*.sql")
                    if p.name != "schema.sql")
    writes = re.findall(r"\blog\s*=\s*(CASE\b.*?\bEND\b|[^\n]*)", sql, re.S)
    assert len(writes) >= 10  # the claim, the steps, the outcomes, the operators
    # A write either appends through the cap, or (a CASE) keeps the log as it is in one
    # branch and appends through the cap in the other (a job's later task claimed: no line).
    kept = re.compile(r"^CASE WHEN .+? THEN (j\.)?log\s+ELSE job_log_append\(.*END$", re.S)
    assert [w for w in writes if not w.startswith("job_log_append(")
            and not kept.match(w)] == []


def test_an_operator_line_on_a_full_log_is_capped_too(
    pool: ConnectionPool[db.Connection], tmp_path_factory: pytest.TempPathFactory
) -> None:
    handle = claimed_handle(pool, tmp_path_factory)
    for i in range(400):
        handle.log(f"line {i:03d} {'x' * 40}")
    with db.transaction(pool) as conn:  # the worker is gone: its task's lease runs out
        conn.execute("UPDATE mediaq.job_tasks SET lease_expires_at = now() - interval "
                     "'1 minute' WHERE job_id = %s AND state = 'running'", (handle.job_id,))
    rescue_once(pool, "rescuer", max_rescues=5, lease_seconds=10)  # another statement's line
    log = stored_log(pool, handle.job_id)
    assert len(log.encode()) <= CAP and len(MARKER.findall(log)) == 1
    assert "rescued by rescuer" in log.splitlines()[-1]
