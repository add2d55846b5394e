"""The schema: Alembic migrations, the outdated-schema guard, the reference SQL of
tests/data/ (sample rows, dashboard and stage-event queries) running unchanged, the
DuckDB compatibility functions, media_queue in step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from mediaq import migrate
from tests.helpers import MediaqEnv, diagnostic_workflow

DATA = Path(__file__).resolve().parent / "data"


def sql_file(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def run_seed_sql(conn: psycopg.Connection[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    cur = conn.execute(sql_file(name))
    return cur.fetchall() if cur.description else []


def one_line_error(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- migrations -------------------------------------------------------------------------


def test_head_revision_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config(""))
    assert migrate.head_revision() == script.get_current_head()


def test_db_upgrade_creates_the_mediaq_schema_and_is_idempotent(
    tmp_path: Path, empty_database_url: str
) -> None:
    mq = MediaqEnv.create(tmp_path, empty_database_url)
    head = migrate.head_revision()

    before = mq.cli("db", "status", check=False)
    assert before.returncode == 1
    assert f"schema revision: none (this mediaq needs {head})" in before.stdout

    first = mq.cli("db", "upgrade")
    assert first.stdout.strip() == f"schema upgraded from nothing to revision {head}"
    tables = {r["table_name"] for r in mq.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'mediaq'")}
    assert {"workflow_definitions", "workflow_steps", "workflow_jobs", "step_executions",
            "media_queue", "workflow_notifications", "media_workflow_events",
            "alembic_version"} <= tables
    assert mq.query("SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = 'public'") == []

    second = mq.cli("db", "upgrade")
    assert second.returncode == 0
    assert second.stdout.strip() == f"schema already at revision {head}"
    assert mq.one("SELECT version_num FROM mediaq.alembic_version")["version_num"] == head

    status = mq.cli("db", "status")
    assert status.returncode == 0
    assert f"schema revision: {head} (this mediaq needs {head})" in status.stdout


@pytest.mark.parametrize("command", [("jobs",), ("worker", "--burst")],
                         ids=["jobs", "worker"])
def test_outdated_schema_is_refused(mq: MediaqEnv, command: tuple[str, ...]) -> None:
    mq.query("UPDATE mediaq.alembic_version SET version_num = 'old0'")
    result = mq.cli(*command, check=False)
    assert result.returncode != 0
    line = one_line_error(result)
    assert line.startswith("error: ")
    assert "old0" in line and "mediaq db upgrade" in line
    assert mq.query("SELECT * FROM workers") == []  # the worker never started


@pytest.mark.parametrize("command", [("jobs",), ("worker", "--burst")],
                         ids=["jobs", "worker"])
def test_missing_schema_is_refused(tmp_path: Path, empty_database_url: str,
                                   command: tuple[str, ...]) -> None:
    mq = MediaqEnv.create(tmp_path, empty_database_url)
    result = mq.cli(*command, check=False)
    assert result.returncode != 0
    line = one_line_error(result)
    assert line.startswith("error: ") and "mediaq db upgrade" in line
    # refusing does not create the schema behind the user's back
    assert mq.query("SELECT 1 FROM information_schema.schemata"
                    " WHERE schema_name = 'mediaq'") == []


# -- the reference SQL of tests/data/, as written ----------------------------------------


def test_seed_000_and_003_statements_run_unchanged(mq: MediaqEnv) -> None:
    with psycopg.connect(mq.url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET search_path = mediaq")
        run_seed_sql(conn, "seed000_inserts.sql")

        # step 12: the job status dashboard
        step12 = run_seed_sql(conn, "seed000_step12.sql")
        assert [(r["job_code"], r["status"]) for r in step12] == [
            ("JOB-2024-005", "failed"), ("JOB-2024-002", "processing"),
            ("JOB-2024-006", "queued"), ("JOB-2024-004", "pending"),
            ("JOB-2024-001", "completed"), ("JOB-2024-003", "completed")]
        totals = {r["job_code"]: r["total_steps"] for r in step12}
        assert totals["JOB-2024-001"] == 7 and totals["JOB-2024-003"] == 5
        assert totals["JOB-2024-006"] == 0

        # step 13: the queue monitor: the two waiting reference jobs, plus job 2 running
        step13 = {r["queue_name"]: r for r in run_seed_sql(conn, "seed000_step13.sql")}
        assert step13["video_processing"]["waiting"] == 1
        assert step13["video_analysis"]["waiting"] == 1
        assert sum(r["waiting"] for r in step13.values()) == 2
        assert sum(r["processing"] for r in step13.values()) == 1

        # step 14: step performance, slowest first
        step14 = run_seed_sql(conn, "seed000_step14.sql")
        assert len(step14) == 12
        assert step14[0]["step_name"] == "Transcode 1080p"
        assert step14[0]["executions"] == 2 and float(step14[0]["avg_duration_sec"]) == 1500
        by_name = {r["step_name"]: r for r in step14}
        assert by_name["Transcode 720p"]["executions"] == 2  # one still running
        assert float(by_name["Transcode 720p"]["avg_duration_sec"]) == 780

        # step 15: workflow analytics
        step15 = {r["workflow_name"]: r for r in run_seed_sql(conn, "seed000_step15.sql")}
        assert len(step15) == 5
        video = step15["Video Transcoding Pipeline"]
        assert (video["total_jobs"], video["completed"], video["failed"],
                video["in_progress"]) == (3, 1, 0, 2)
        assert float(video["avg_duration_minutes"]) == 44
        image = step15["Image Processing Pipeline"]
        assert (image["total_jobs"], image["completed"], image["failed"]) == (2, 1, 1)
        assert step15["Audio Transcoding Pipeline"]["total_jobs"] == 0

        # the stage-event queries over the events the reference step executions wrote
        in_flight = run_seed_sql(conn, "seed003_in_flight.sql")
        assert [(r["workflow_id"], r["workflow_stage"]) for r in in_flight] == [
            (2, "Transcode 720p")]
        cycle = {r["workflow_stage"]: r for r in run_seed_sql(conn, "seed003_cycle_sla.sql")}
        assert cycle["Transcode 1080p"]["n"] == 2
        assert cycle["Transcode 1080p"]["p50_hours"] == pytest.approx(0.42)
        assert cycle["Transcode 1080p"]["p90_hours"] == pytest.approx(0.48)
        assert float(cycle["Transcode 1080p"]["miss_rate"]) == 0
        assert "Transcode 720p" in cycle  # job 1 finished it
        assert cycle["Transcode 720p"]["n"] == 1
        started = run_seed_sql(conn, "seed003_started_wrong.sql")
        assert len(started) == 7 + 4 + 5  # stages started by jobs 1, 2 and 3

        # after the reference rows' explicit ids, the engine still creates rows without
        # collisions
        job = conn.execute("SELECT * FROM mediaq.submit_job('WF-IMAGE-PROCESS', '/in/new.jpg')"
                           ).fetchone()
        assert job is not None
        assert job["id"] == 7 and job["job_code"] not in {r["job_code"] for r in step12}
        assert job["priority"] == 3 and job["status"] == "pending"
        queue_rows = conn.execute("SELECT id, status FROM media_queue WHERE job_id = %s",
                                  (job["id"],)).fetchall()
        assert len(queue_rows) == 1 and queue_rows[0]["status"] == "queued"
        # media_queue ids stay unique although the reference rows asked for ids 1 and 2
        assert conn.execute("SELECT count(*) = count(DISTINCT id) AS ok FROM media_queue"
                            ).fetchone() == {"ok": True}
        conn.execute("INSERT INTO workflow_notifications (job_id, notification_type)"
                     " VALUES (%s, 'test')", (job["id"],))
        conn.execute("INSERT INTO step_executions (job_id, step_id, status)"
                     " VALUES (%s, 8, 'pending')", (job["id"],))

    # a new workflow gets fresh definition and step ids too
    mq.apply_workflow(diagnostic_workflow("T-AFTER-SEED", {"action": "noop"}))
    wf = mq.one("SELECT id FROM workflow_definitions WHERE workflow_code = 'T-AFTER-SEED'")
    assert wf["id"] == 6
    assert mq.one("SELECT id FROM workflow_steps WHERE workflow_id = %s", (wf["id"],))["id"] == 13


# -- DuckDB compatibility functions -------------------------------------------------------


def test_epoch_and_round_compatibility_functions(mq: MediaqEnv) -> None:
    row = mq.one("""
        SELECT epoch(interval '1 hour 30 minutes') AS a,
               epoch(interval '2 days 0.5 seconds') AS b,
               epoch(timestamp '2024-01-25 11:33:30' - timestamp '2024-01-25 11:03:30') AS c,
               epoch(interval '-90 seconds') AS d,
               round(1.23456::double precision, 3) AS e,
               round(2.5::double precision, 0) AS f,
               round((-1.25)::double precision, 1) AS g,
               round(percentile_cont(0.5) WITHIN GROUP (ORDER BY x), 2) AS h,
               pg_typeof(round(1.5::double precision, 1))::text AS t
          FROM (VALUES (1.0), (2.0), (4.0)) v(x)""")
    assert row["a"] == 5400.0
    assert row["b"] == 172800.5
    assert row["c"] == 1800.0
    assert row["d"] == -90.0
    assert row["e"] == 1.235
    assert row["f"] == 3.0
    assert row["g"] == -1.3
    assert row["h"] == 2.0
    assert row["t"] == "double precision"


# -- media_queue mirrors workflow_jobs ----------------------------------------------------


def queue_monitor_row(mq: MediaqEnv, queue: str) -> list[str] | None:
    """The row of `mediaq queues` (the queue monitor) for ``queue``, as cells."""
    for line in mq.cli("queues").stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if cells and cells[0] == queue:
            return cells
    return None


def test_media_queue_stays_in_step_with_jobs(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-QUEUE", {"action": "noop"}, queue_name="q-test",
                                          default_priority=7))
    path = mq.input_file("a.bin")
    code = mq.one("SELECT job_code FROM mediaq.submit_job('T-QUEUE', %s)", (str(path),)
                  )["job_code"]
    job = mq.job(code)
    rows = mq.query("SELECT queue_name, status, priority FROM media_queue WHERE job_id = %s",
                    (job["id"],))
    assert rows == [{"queue_name": "q-test", "status": "queued", "priority": 7}]

    cells = queue_monitor_row(mq, "q-test")
    assert cells is not None, mq.cli("queues").stdout
    # queue_name, jobs_in_queue, waiting, processing, avg_priority, next_scheduled, paused
    assert cells[1:5] == ["1", "1", "0", "7"]

    mq.run_burst()
    assert mq.job(code)["status"] == "completed"
    assert mq.one("SELECT status FROM media_queue WHERE job_id = %s", (job["id"],)) == {
        "status": "completed"}
    assert queue_monitor_row(mq, "q-test") is None

    other = mq.one("SELECT job_code FROM mediaq.submit_job('T-QUEUE', %s)", (str(path),)
                   )["job_code"]
    mq.cli("cancel", other)
    assert mq.query("SELECT mq.status FROM media_queue mq JOIN workflow_jobs j"
                    " ON j.id = mq.job_id WHERE j.job_code = %s", (other,)) == [
        {"status": "cancelled"}]
    assert mq.one("SELECT count(*) AS n FROM media_queue")["n"] == 2
