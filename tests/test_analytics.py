"""Analytics: the analytics views of mediaq/sql/schema.sql, the reports over them and
`mediaq report`.

A history of a few thousand jobs is written with set-based SQL inserts of jobs and
step executions; the engine's own trigger turns the executions into stage events in
media_workflow_events (started, completed, failed, with SLA due times), as it does for
a worker. The views must agree with the reference statements of tests/data/ run as
written (seed003_*.sql: stage-event queries; seed000_*.sql: sample rows and dashboard
queries), with a model of the history kept in Python, and with hand-computed numbers
on a small known history.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from mediaq import analytics, workflows
from mediaq.errors import ReportRefused
from tests.conftest import TEMPLATE, scratch_database
from tests.helpers import MediaqEnv, diagnostic_workflow

DATA = Path(__file__).resolve().parent / "data"
JOBS = 3000
STAGES = ("Ingest", "Transcode", "QC", "Publish")
SLA_SECONDS = {"Ingest": 60, "Transcode": 1800, "QC": 300, "Publish": 120}
WORKFLOW_SLA_MINUTES = 45
ACTIVE = ("pending", "queued", "processing", "paused")

Conn = psycopg.Connection[dict[str, Any]]


def sql_file(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def rows_of(conn: Conn, sql: str, params: Any = None) -> list[dict[str, Any]]:
    return conn.execute(sql, params).fetchall()


def percentile_cont(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


# -- the generated history, and its model ---------------------------------------------------


@dataclass
class Execution:
    stage: str
    status: str  # running, completed, failed
    started_at: datetime
    completed_at: datetime | None = None


@dataclass
class Job:
    id: int
    status: str
    submitted_at: datetime
    current_step: int = 0
    retry_count: int = 0
    error_class: str | None = None
    error_message: str | None = None
    retry_after: datetime | None = None
    executions: list[Execution] = field(default_factory=list)

    @property
    def started_at(self) -> datetime | None:
        return self.executions[0].started_at if self.executions else None

    @property
    def completed_at(self) -> datetime | None:
        if self.status not in ("completed", "failed"):
            return None
        return self.executions[-1].completed_at

    def run(self, stage: str, seconds: float, status: str = "completed",
            gap: float = 0) -> None:
        """An execution of ``stage`` starting ``gap`` seconds after the previous one ended."""
        last = self.executions[-1].completed_at if self.executions else self.submitted_at
        assert last is not None
        start = last + timedelta(seconds=gap)
        end = None if status == "running" else start + timedelta(seconds=seconds)
        self.executions.append(Execution(stage, status, start, end))
        self.current_step = STAGES.index(stage) + 1 if stage in STAGES else 1


def durations(i: int) -> dict[str, float]:
    """Varied, deterministic run times; some of each stage miss their SLA."""
    return {"Ingest": 5 + i * 7 % 80, "Transcode": 300 + i * 53 % 2400,
            "QC": 30 + (i * 29 % 400) + 0.5, "Publish": 10 + i * 11 % 150}


def make_job(i: int, base: datetime) -> Job:
    """Job i's story, by i % 20: dead letters (0, 7), in flight (1), waiting out a retry
    (2), reworked (3, 4), a failed `continue` step (5), queued (6), else plain success."""
    kind, d = i % 20, durations(i)
    job = Job(id=i, status="completed", submitted_at=base + timedelta(seconds=37 * i))
    if kind == 6:
        job.status = "queued"
        return job
    if kind == 7:
        job.run("Ingest", d["Ingest"], "failed", gap=5 + i % 200)
        job.status, job.error_class, job.error_message = "failed", "permanent", "corrupt input"
        return job
    job.run("Ingest", d["Ingest"], gap=5 + i % 200)
    if kind in (0, 2, 3, 4):
        failures = 3 if kind == 0 else 1
        for attempt in range(failures):
            job.run("Transcode", d["Transcode"] / 3, "failed", gap=60 * attempt)
        if kind == 0:
            job.status, job.error_class, job.retry_count = "failed", "transient", 3
            job.error_message = "encoder crashed"
            return job
        if kind == 2:
            job.status, job.retry_count = "pending", 1
            job.retry_after = datetime.now(UTC) + timedelta(hours=1)
            return job
        job.retry_count = 1
        job.run("Transcode", d["Transcode"], gap=30)
    else:
        job.run("Transcode", d["Transcode"])
    if kind == 1:
        job.run("QC", 0, "running")
        job.status = "processing"
        return job
    job.run("QC", d["QC"])
    job.run("Publish", d["Publish"], "failed" if kind == 5 else "completed")
    return job


def history(base: datetime) -> list[Job]:
    return [make_job(i, base) for i in range(1, JOBS + 1)]


def history_workflow() -> dict[str, Any]:
    return diagnostic_workflow(
        "T-HISTORY",
        {"action": "noop", "step_name": "Ingest", "sla_seconds": SLA_SECONDS["Ingest"]},
        {"action": "noop", "step_name": "Transcode", "on_failure": "retry",
         "sla_minutes": SLA_SECONDS["Transcode"] // 60},
        {"action": "noop", "step_name": "QC", "sla_seconds": SLA_SECONDS["QC"]},
        {"action": "noop", "step_name": "Publish", "on_failure": "continue",
         "sla_seconds": SLA_SECONDS["Publish"]},
        sla_minutes=WORKFLOW_SLA_MINUTES)


JOB_INSERT = """
INSERT INTO workflow_jobs (id, job_code, workflow_id, input_file_path, status, current_step,
                           submitted_at, started_at, completed_at, error_class, error_message,
                           retry_count, retry_after)
SELECT j.id, 'H-' || lpad(j.id::text, 6, '0'), %(workflow_id)s, '/in/' || j.id || '.mov',
       j.status, j.current_step, j.submitted_at, j.started_at, j.completed_at, j.error_class,
       j.error_message, j.retry_count, j.retry_after
  FROM jsonb_to_recordset(%(jobs)s) AS j(id bigint, status text, current_step integer,
       submitted_at timestamptz, started_at timestamptz, completed_at timestamptz,
       error_class text, error_message text, retry_count integer, retry_after timestamptz)
"""

EXECUTION_INSERT = """
INSERT INTO step_executions (job_id, step_id, status, started_at, completed_at,
                             duration_seconds, duration_ms, retry_attempt)
SELECT e.job_id, ws.id, e.status, e.started_at, e.completed_at,
       round(extract(epoch FROM e.completed_at - e.started_at))::integer,
       round(extract(epoch FROM e.completed_at - e.started_at) * 1000)::integer,
       e.retry_attempt
  FROM jsonb_to_recordset(%(executions)s) AS e(n integer, job_id bigint, stage text,
       status text, started_at timestamptz, completed_at timestamptz, retry_attempt integer)
  JOIN workflow_steps ws ON ws.workflow_id = %(workflow_id)s AND ws.step_name = e.stage
 ORDER BY e.n
"""


# What each completed job was expected to take when it started: 10 % off either way,
# so the eta report's median absolute error is 0.1.
ESTIMATE_INSERT = """
INSERT INTO job_estimates (job_id, estimated_seconds, estimated_at)
SELECT id, extract(epoch FROM completed_at - started_at) * CASE WHEN id %% 2 = 0 THEN 1.1
                                                                  ELSE 0.9 END,
       started_at
  FROM workflow_jobs WHERE workflow_id = %(workflow_id)s AND status = 'completed'
"""


def job_record(job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": job.status, "current_step": job.current_step,
            "submitted_at": job.submitted_at.isoformat(),
            "started_at": job.started_at and job.started_at.isoformat(),
            "completed_at": job.completed_at and job.completed_at.isoformat(),
            "error_class": job.error_class, "error_message": job.error_message,
            "retry_count": job.retry_count,
            "retry_after": job.retry_after and job.retry_after.isoformat()}


def execution_records(job: Job) -> Iterator[dict[str, Any]]:
    seen: dict[str, int] = {}
    for ex in job.executions:
        seen[ex.stage] = seen.get(ex.stage, -1) + 1
        yield {"job_id": job.id, "stage": ex.stage, "status": ex.status,
               "started_at": ex.started_at.isoformat(),
               "completed_at": ex.completed_at and ex.completed_at.isoformat(),
               "retry_attempt": seen[ex.stage]}


def write_history(conn: Conn, jobs: list[Job], workflow_id: int) -> None:
    conn.execute(JOB_INSERT, {"workflow_id": workflow_id,
                              "jobs": Jsonb([job_record(j) for j in jobs])})
    records = [{**r, "n": n} for n, r in enumerate(r for j in jobs for r in execution_records(j))]
    conn.execute(EXECUTION_INSERT, {"workflow_id": workflow_id, "executions": Jsonb(records)})
    conn.execute(ESTIMATE_INSERT, {"workflow_id": workflow_id})


def apply(url: str, doc: dict[str, Any]) -> int:
    with psycopg.connect(url, row_factory=dict_row,
                         options="-c search_path=mediaq,public") as conn:
        workflows.apply(conn, workflows.normalise(doc))
        row = conn.execute("SELECT id FROM workflow_definitions"
                           " WHERE workflow_code = %s AND is_current",
                           (doc["workflow_code"],)).fetchone()
        assert row is not None
        return int(row["id"])


@dataclass
class History:
    mq: MediaqEnv
    jobs: list[Job]
    conn: Conn


@pytest.fixture(scope="module")
def hist(server_url: str, template_url: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """One database with the generated history, shared by the read-only tests below."""
    with scratch_database(server_url, TEMPLATE) as url:
        workflow_id = apply(url, history_workflow())
        jobs = history(datetime.now(UTC).replace(microsecond=0) - timedelta(days=3))
        mq = MediaqEnv.create(tmp_path_factory.mktemp("analytics"), url)
        with mq.connect() as conn:
            write_history(conn, jobs, workflow_id)
            conn.execute("ANALYZE")
            yield History(mq, jobs, conn)


# -- model expectations -----------------------------------------------------------------------


@dataclass
class Pair:
    starts: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    failed: bool = False


def pairs(jobs: list[Job]) -> dict[tuple[int, str], Pair]:
    out: dict[tuple[int, str], Pair] = {}
    for job in jobs:
        for ex in job.executions:
            pair = out.setdefault((job.id, ex.stage), Pair())
            pair.starts += 1
            pair.started_at = pair.started_at or ex.started_at
            if ex.status == "completed" and pair.completed_at is None:
                pair.completed_at = ex.completed_at
            pair.failed = pair.failed or ex.status == "failed"
    return out


def cycle_seconds(jobs: list[Job], since: datetime | None = None) -> dict[str, list[float]]:
    """Per stage, the cycle times of the (job, stage) pairs first started since ``since``."""
    out: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for (_, stage), pair in pairs(jobs).items():
        if pair.completed_at and pair.started_at and (since is None or pair.started_at >= since):
            out[stage].append((pair.completed_at - pair.started_at).total_seconds())
    return out


def by(rows: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    return {row[key]: row for row in rows}


# -- the stage-event reference queries over the generated history ------------------------------


def test_cycle_time_and_sla_agree_with_seed_003_and_the_model(hist: History) -> None:
    seed = by(rows_of(hist.conn, sql_file("seed003_cycle_sla.sql")), "workflow_stage")
    cycle = by(rows_of(hist.conn, "SELECT * FROM stage_cycle_time"), "workflow_stage")
    sla = by(rows_of(hist.conn, "SELECT * FROM stage_sla"), "workflow_stage")
    assert set(seed) == set(cycle) == set(sla) == set(STAGES)
    model = cycle_seconds(hist.jobs)
    for stage in STAGES:
        assert cycle[stage]["n"] == seed[stage]["n"] == sla[stage]["n"] == len(model[stage])
        assert cycle[stage]["p50_hours"] == pytest.approx(seed[stage]["p50_hours"])
        assert cycle[stage]["p90_hours"] == pytest.approx(seed[stage]["p90_hours"])
        assert sla[stage]["miss_rate"] == pytest.approx(float(seed[stage]["miss_rate"]))
        assert cycle[stage]["p50_seconds"] == pytest.approx(percentile_cont(model[stage], 0.5),
                                                            abs=1e-3)
        assert cycle[stage]["p90_seconds"] == pytest.approx(percentile_cont(model[stage], 0.9),
                                                            abs=1e-3)
        missed = sum(1 for s in model[stage] if s > SLA_SECONDS[stage])
        assert sla[stage]["missed"] == missed
        assert sla[stage]["avg_sla_seconds"] == pytest.approx(SLA_SECONDS[stage])
    # reworked transcodes count from their first start: the cycle holds the failed tries
    assert cycle["Transcode"]["reworked"] == sum(1 for j in hist.jobs if j.id % 20 in (3, 4))
    assert 0 < sla["Transcode"]["miss_rate"] < 1 and 0 < sla["QC"]["miss_rate"] < 1


def test_in_flight_is_seed_003s_anti_join_less_dead_and_given_up_stages(hist: History) -> None:
    seed = {(r["workflow_id"], r["workflow_stage"])
            for r in rows_of(hist.conn, sql_file("seed003_in_flight.sql"))}
    view = rows_of(hist.conn, "SELECT * FROM stage_in_flight")
    ours = {(r["workflow_id"], r["workflow_stage"]) for r in view}
    expected = {(j.id, "QC") for j in hist.jobs if j.id % 20 == 1} | \
               {(j.id, "Transcode") for j in hist.jobs if j.id % 20 == 2}
    assert ours == expected
    assert ours <= seed
    # what the reference in-flight query still counts: stages of dead letters, and failed
    # `continue` steps the job went past
    assert seed - ours == {(j.id, "Transcode") for j in hist.jobs if j.id % 20 == 0} | \
        {(j.id, "Ingest") for j in hist.jobs if j.id % 20 == 7} | \
        {(j.id, "Publish") for j in hist.jobs if j.id % 20 == 5}
    # the naive "started" reference query returns every stage ever started, and a
    # reworked one once per start (each start has its own SLA due time)
    started = rows_of(hist.conn, sql_file("seed003_started_wrong.sql"))
    model = pairs(hist.jobs)
    assert len(started) == len(model) + sum(p.starts - 1 for p in model.values())
    statuses = {r["job_status"] for r in view}
    assert statuses == {"processing", "pending"}
    transcodes = [r for r in view if r["workflow_stage"] == "Transcode"]
    assert all(r["starts"] == 1 and r["overdue"] for r in transcodes)  # days old


def test_rework_loops(hist: History) -> None:
    reworked = {(j.id, "Transcode"): 3 if j.id % 20 == 0 else 2
                for j in hist.jobs if j.id % 20 in (0, 3, 4)}
    seed_style = rows_of(hist.conn, """
        SELECT workflow_id, workflow_stage, COUNT(*) AS starts
          FROM media_workflow_events WHERE event_type = 'stage_started'
         GROUP BY workflow_id, workflow_stage HAVING COUNT(*) > 1""")
    assert {(r["workflow_id"], r["workflow_stage"]): r["starts"] for r in seed_style} == reworked
    rows = rows_of(hist.conn, "SELECT * FROM stage_rework")
    assert {(r["workflow_id"], r["workflow_stage"]): r["starts"] for r in rows} == reworked
    assert all(r["rework_loops"] == r["starts"] - 1 for r in rows)
    assert all(r["failures"] == (3 if r["job_status"] == "failed" else 1) for r in rows)
    summary = by(rows_of(hist.conn, "SELECT * FROM stage_rework_summary"), "workflow_stage")
    transcode = summary["Transcode"]
    assert transcode["reworked"] == len(reworked)
    assert transcode["rework_loops"] == sum(n - 1 for n in reworked.values())
    assert transcode["max_starts"] == 3
    assert transcode["completed_after_rework"] == sum(1 for j in hist.jobs
                                                      if j.id % 20 in (3, 4))
    started = sum(1 for (_, stage) in pairs(hist.jobs) if stage == "Transcode")
    assert transcode["started"] == started
    assert transcode["rework_rate"] == pytest.approx(round(len(reworked) / started, 4))
    assert summary["QC"]["reworked"] == 0


def test_dead_letters(hist: History) -> None:
    rows = rows_of(hist.conn, "SELECT * FROM dead_letters")
    expected = {j.id: j for j in hist.jobs if j.status == "failed"}
    assert {r["job_id"] for r in rows} == set(expected)
    for row in rows:
        job = expected[row["job_id"]]
        assert row["failed_stage"] == ("Ingest" if job.error_class == "permanent"
                                       else "Transcode")
        assert row["failed_at"] == job.completed_at
        assert row["error_message"] == job.error_message


# -- the reference dashboard queries over the generated history -------------------------------


def test_step_performance_agrees_with_seed_000_step_14(hist: History) -> None:
    seed = by(rows_of(hist.conn, sql_file("seed000_step14.sql")), "step_name")
    ours = by(rows_of(hist.conn, "SELECT * FROM step_performance"), "step_name")
    assert set(ours) == set(seed) == set(STAGES)
    for stage in STAGES:
        for column in ("executions", "min_duration_sec", "max_duration_sec", "failures"):
            assert ours[stage][column] == seed[stage][column], (stage, column)
        assert ours[stage]["avg_duration_sec"] == pytest.approx(
            float(seed[stage]["avg_duration_sec"]))
    assert [r["step_name"] for r in rows_of(hist.conn, sql_file("seed000_step14.sql"))] == \
        [r["step_name"] for r in rows_of(hist.conn, "SELECT * FROM step_performance")]
    # queue wait: the first step waits for a worker; later ones start as the last ends,
    # unless a retry's back-off came first
    waits = [(j.executions[0].started_at - j.submitted_at).total_seconds()
             for j in hist.jobs if j.executions]
    assert ours["Ingest"]["avg_wait_seconds"] == pytest.approx(sum(waits) / len(waits),
                                                               abs=1e-3)
    assert ours["QC"]["avg_wait_seconds"] == 0
    assert ours["Transcode"]["avg_wait_seconds"] > 0
    assert 0 < ours["Ingest"]["wait_share"] < 1


def test_workflow_analytics_agrees_with_seed_000_step_15(hist: History) -> None:
    seed = by(rows_of(hist.conn, sql_file("seed000_step15.sql")), "workflow_name")
    ours = by(rows_of(hist.conn, "SELECT * FROM workflow_analytics"), "workflow_code")
    row, seed_row = ours["T-HISTORY"], seed["T-HISTORY"]
    for column in ("total_jobs", "completed", "failed", "in_progress"):
        assert row[column] == seed_row[column], column
    assert row["avg_duration_minutes"] == pytest.approx(float(seed_row["avg_duration_minutes"]))
    assert row["total_jobs"] == JOBS
    assert row["in_progress"] == sum(1 for j in hist.jobs if j.status in ACTIVE)
    done = [j for j in hist.jobs if j.status == "completed"]
    due = timedelta(minutes=WORKFLOW_SLA_MINUTES)
    missed = sum(1 for j in done if j.completed_at and j.completed_at > j.submitted_at + due)
    assert row["sla_minutes"] == WORKFLOW_SLA_MINUTES
    assert row["sla_missed"] == missed
    assert row["sla_miss_rate"] == pytest.approx(round(missed / len(done), 4))


def test_reports_are_the_views(hist: History) -> None:
    views = {"steps": "step_performance", "workflows": "workflow_analytics",
             "cycle-time": "stage_cycle_time", "sla": "stage_sla",
             "rework": "stage_rework_summary"}
    for name, view in views.items():
        assert analytics.report(hist.conn, name) == rows_of(hist.conn, f"SELECT * FROM {view}")
    in_flight = analytics.report(hist.conn, "in-flight")
    assert len(in_flight) == len(rows_of(hist.conn, "SELECT * FROM stage_in_flight"))
    assert [r["started_at"] for r in in_flight] == sorted(r["started_at"] for r in in_flight)
    dead = analytics.report(hist.conn, "dead-letters")
    assert [r["job_id"] for r in dead] == \
        [r["job_id"] for r in rows_of(hist.conn, "SELECT * FROM dead_letters"
                                                 " ORDER BY failed_at DESC, job_id DESC")]
    eta = analytics.report(hist.conn, "eta")
    completed = sum(1 for job in hist.jobs if job.status == "completed")
    assert [(r["jobs"], r["median_abs_error"]) for r in eta] == [(completed, 0.1)]
    # values are JSON-ready: numbers are int or float, never Decimal
    for name in analytics.REPORTS:
        rows = analytics.report(hist.conn, name)
        assert rows, name
        json.dumps(rows, default=lambda v: v.isoformat())


def test_since_filters_every_report(hist: History) -> None:
    since = hist.jobs[JOBS // 2].submitted_at
    later = [j for j in hist.jobs if j.submitted_at >= since]
    workflows_row = by(analytics.report(hist.conn, "workflows", since), "workflow_code")
    assert workflows_row["T-HISTORY"]["total_jobs"] == len(later)
    cycle = by(analytics.report(hist.conn, "cycle-time", since), "workflow_stage")
    model = cycle_seconds(hist.jobs, since)  # stages first started since: older jobs' too
    assert cycle["QC"]["n"] == len(model["QC"])
    assert cycle["QC"]["p90_seconds"] == pytest.approx(percentile_cont(model["QC"], 0.9),
                                                       abs=1e-3)
    steps = by(analytics.report(hist.conn, "steps", since), "step_name")
    assert steps["QC"]["executions"] == sum(1 for j in hist.jobs for e in j.executions
                                            if e.stage == "QC" and e.started_at >= since)
    dead = analytics.report(hist.conn, "dead-letters", since)
    assert {r["job_id"] for r in dead} == {j.id for j in hist.jobs if j.status == "failed"
                                           and j.completed_at and j.completed_at >= since}
    assert len(dead) < sum(1 for j in hist.jobs if j.status == "failed")
    future = datetime.now(UTC) + timedelta(days=1)
    assert analytics.report(hist.conn, "in-flight", future) == []
    assert analytics.report(hist.conn, "cycle-time", future) == []
    assert by(analytics.report(hist.conn, "steps", future), "step_name")["QC"]["executions"] == 0


def test_views_are_cheap_on_thousands_of_jobs(hist: History) -> None:
    views = ("job_status_dashboard", "queue_monitor", "job_stats", "step_performance",
             "workflow_analytics", "stage_cycle_time", "stage_sla", "stage_rework",
             "stage_rework_summary", "stage_in_flight", "dead_letters", "step_timings")
    timings = {}
    for view in views:
        start = time.perf_counter()
        rows_of(hist.conn, f"SELECT * FROM {view}")
        timings[view] = time.perf_counter() - start
    assert max(timings.values()) < 5, timings  # a generous bound for a loaded test machine
    assert sum(timings.values()) < 15, timings


def test_views_need_no_search_path(hist: History) -> None:
    """A SQL dashboard that names the schema, with its own search_path, works too."""
    with psycopg.connect(hist.mq.url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET search_path = public")
        for view in ("stage_cycle_time", "stage_sla", "step_performance",
                     "workflow_analytics", "stage_rework_summary"):
            assert conn.execute(f"SELECT * FROM mediaq.{view}").fetchall(), view


def test_unknown_report_and_bad_since_are_refused(hist: History) -> None:
    with pytest.raises(ReportRefused, match=r"unknown report 'latency'.*cycle-time"):
        analytics.report(hist.conn, "latency")
    with pytest.raises(ReportRefused, match="--since 'yesterday'"):
        analytics.parse_since("yesterday")
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert analytics.parse_since("7d", now) == now - timedelta(days=7)
    assert analytics.parse_since("12h", now) == now - timedelta(hours=12)
    assert analytics.parse_since("30m", now) == now - timedelta(minutes=30)
    assert analytics.parse_since("2026-11-01T08:00+00:00") == datetime(2026, 11, 1, 8,
                                                                       tzinfo=UTC)
    assert analytics.parse_since("2026-11-01").tzinfo is not None


# -- the CLI ------------------------------------------------------------------------------------


def test_report_command_formats(hist: History) -> None:
    out = hist.mq.cli("report", "cycle-time", "--format", "json").stdout
    parsed = json.loads(out)
    assert {r["workflow_stage"] for r in parsed} == set(STAGES)
    assert all(isinstance(r["p90_seconds"], float) for r in parsed)
    views = by(rows_of(hist.conn, "SELECT * FROM stage_cycle_time"), "workflow_stage")
    assert all(r["p90_seconds"] == views[r["workflow_stage"]]["p90_seconds"] for r in parsed)

    text = hist.mq.cli("report", "dead-letters", "--since", "7d", "--format", "csv").stdout
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames is not None
    assert reader.fieldnames[:3] == ["job_id", "job_code", "workflow_code"]
    failed = {j.completed_at for j in hist.jobs if j.status == "failed"}
    assert {datetime.fromisoformat(r["failed_at"]) for r in reader} == failed  # ISO, zoned

    table = hist.mq.cli("report", "sla").stdout
    assert "SLA miss rate per stage" in table and "Transcode" in table

    bad = hist.mq.cli("report", "sla", "--since", "last tuesday", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: --since 'last tuesday': expected a date (2026-11-01), a date-time "
        "(2026-11-01T08:00) or an age (30m, 12h, 7d, 2w)"]
    unknown = hist.mq.cli("report", "latency", check=False)
    assert unknown.returncode == 2 and "latency" in unknown.stderr


# -- a small known history, computed by hand ----------------------------------------------------


def test_hand_computed_cycle_time_sla_and_wait(mq: MediaqEnv) -> None:
    """Ten jobs, one hour apart; each waits 2 minutes, then runs one step for k minutes
    (k = 1..10) against a 5-minute step SLA and a 10-minute workflow SLA."""
    workflow_id = apply(mq.url, diagnostic_workflow(
        "T-KNOWN", {"action": "noop", "step_name": "Encode", "sla_minutes": 5},
        sla_minutes=10))
    base = datetime(2026, 11, 1, tzinfo=UTC)
    jobs = []
    for k in range(1, 11):
        job = Job(id=k, status="completed", submitted_at=base + timedelta(hours=k))
        job.run("Encode", 60 * k, gap=120)
        jobs.append(job)
    with mq.connect() as conn:
        write_history(conn, jobs, workflow_id)
        cycle = analytics.report(conn, "cycle-time")
        sla = analytics.report(conn, "sla")
        steps = analytics.report(conn, "steps")
        flows = by(analytics.report(conn, "workflows"), "workflow_code")["T-KNOWN"]
        later_cycle = analytics.report(conn, "cycle-time", base + timedelta(hours=5, minutes=30))
        later_sla = analytics.report(conn, "sla", base + timedelta(hours=5, minutes=30))
        seed = rows_of(conn, sql_file("seed003_cycle_sla.sql"))
    # durations 60..600 s: p50 between the 5th and 6th (300, 360), p90 at rank 8.1
    assert cycle == [{"workflow_stage": "Encode", "n": 10, "p50_hours": 0.09,
                      "p90_hours": 0.15, "avg_seconds": 330.0, "p50_seconds": 330.0,
                      "p90_seconds": 546.0, "max_seconds": 600.0, "reworked": 0}]
    assert (seed[0]["p50_hours"], seed[0]["p90_hours"]) == (0.09, 0.15)
    # due 300 s after the start: 6..10 minutes miss it, exactly 5 minutes does not
    assert sla == [{"workflow_stage": "Encode", "n": 10, "missed": 5, "miss_rate": 0.5,
                    "avg_sla_seconds": 300.0, "avg_overrun_seconds": 180.0,
                    "max_overrun_seconds": 300.0}]
    assert float(seed[0]["miss_rate"]) == 0.5
    assert steps[0]["step_name"] == "Encode"
    assert (steps[0]["executions"], steps[0]["avg_duration_sec"], steps[0]["min_duration_sec"],
            steps[0]["max_duration_sec"]) == (10, 330.0, 60, 600)
    assert (steps[0]["avg_wait_seconds"], steps[0]["avg_run_seconds"]) == (120.0, 330.0)
    assert steps[0]["wait_share"] == round(1200 / (1200 + 3300), 4)
    # the job is due 10 minutes after submission: 2 + k > 10 for k = 9, 10
    assert (flows["total_jobs"], flows["completed"], flows["sla_missed"],
            flows["sla_miss_rate"]) == (10, 10, 2, 0.2)
    assert flows["avg_wait_minutes"] == 2.0
    assert flows["avg_duration_minutes"] == pytest.approx(5.5)
    # since 05:30: jobs 6..10 only, all of them late
    assert later_cycle[0]["n"] == 5 and later_cycle[0]["p50_seconds"] == 480.0
    assert later_sla[0]["miss_rate"] == 1.0


def test_dashboard_views_on_seed_000(mq: MediaqEnv) -> None:
    """The job status dashboard, queue monitor, step performance and workflow analytics
    views show what the reference dashboard queries show over the reference rows."""
    with psycopg.connect(mq.url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET search_path = mediaq")
        conn.execute(sql_file("seed000_inserts.sql"))
        step12 = rows_of(conn, sql_file("seed000_step12.sql"))
        dashboard = rows_of(conn, "SELECT * FROM job_status_dashboard")
        assert [(r["job_code"], r["status"], r["total_steps"]) for r in dashboard] == \
            [(r["job_code"], r["status"], r["total_steps"]) for r in step12]
        step13 = rows_of(conn, sql_file("seed000_step13.sql"))
        monitor = rows_of(conn, "SELECT * FROM queue_monitor")
        assert [(r["queue_name"], r["jobs_in_queue"], r["waiting"], r["processing"])
                for r in monitor] == \
            sorted(((r["queue_name"], r["jobs_in_queue"], r["waiting"], r["processing"])
                    for r in step13), key=lambda t: (-t[2], t[0]))
        step14 = rows_of(conn, sql_file("seed000_step14.sql"))
        performance = rows_of(conn, "SELECT * FROM step_performance")
        assert {(r["step_name"], r["executions"], r["failures"]) for r in performance} == \
            {(r["step_name"], r["executions"], r["failures"]) for r in step14}
        assert performance[0]["step_name"] == step14[0]["step_name"] == "Transcode 1080p"
        step15 = by(rows_of(conn, sql_file("seed000_step15.sql")), "workflow_name")
        analytics_rows = by(rows_of(conn, "SELECT * FROM workflow_analytics"), "workflow_name")
        assert set(analytics_rows) == set(step15)
        for name, row in step15.items():
            assert analytics_rows[name]["total_jobs"] == row["total_jobs"]
            assert analytics_rows[name]["in_progress"] == row["in_progress"]
        stats = conn.execute("SELECT * FROM job_stats").fetchone()
        assert stats is not None
        assert (stats["completed"], stats["failed"], stats["running"]) == (2, 1, 1)
        in_flight = rows_of(conn, "SELECT * FROM stage_in_flight")
        assert [(r["workflow_id"], r["workflow_stage"]) for r in in_flight] == \
            [(2, "Transcode 720p")]


def test_sla_minutes_in_workflow_yaml() -> None:
    doc = workflows.normalise({"workflow_code": "T-SLA", "sla_minutes": 30, "steps": [
        {"action": "noop", "sla_minutes": 2}, {"action": "noop", "sla_seconds": 45},
        {"action": "noop"}]})
    assert doc["sla_minutes"] == 30
    assert [s["sla_seconds"] for s in doc["steps"]] == [120, 45, None]
    assert all("sla_minutes" not in s for s in doc["steps"])
    with pytest.raises(workflows.WorkflowError, match="not both"):
        workflows.normalise({"workflow_code": "T", "steps": [
            {"action": "noop", "sla_minutes": 2, "sla_seconds": 5}]})
    with pytest.raises(workflows.WorkflowError, match="sla_minutes must be"):
        workflows.normalise({"workflow_code": "T", "steps": [
            {"action": "noop", "sla_minutes": 0}]})


def test_reports_over_jobs_run_by_a_worker(mq: MediaqEnv) -> None:
    """The stage events a real worker writes: a retried step is rework, a permanent
    failure a dead letter, a given-up `continue` step is not in flight."""
    mq.apply_workflow(diagnostic_workflow(
        "T-REAL",
        {"action": "noop", "step_name": "Prepare", "sla_minutes": 1},
        {"action": "fail", "step_name": "Flaky", "on_failure": "retry",
         "parameters": {"kind": "transient", "times": 1}},
        {"action": "fail", "step_name": "Optional", "on_failure": "continue",
         "parameters": {"kind": "permanent"}},
        sla_minutes=30))
    mq.apply_workflow(diagnostic_workflow(
        "T-BROKEN", {"action": "fail", "step_name": "Broken",
                     "parameters": {"kind": "permanent"}}))
    good = mq.submit("T-REAL", mq.input_file("a.bin"))
    bad = mq.submit("T-BROKEN", mq.input_file("b.bin"))
    mq.run_burst()
    assert mq.job(good)["status"] == "completed" and mq.job(bad)["status"] == "failed"
    with mq.connect() as conn:
        rework = by(analytics.report(conn, "rework"), "workflow_stage")
        dead = analytics.report(conn, "dead-letters")
        in_flight = analytics.report(conn, "in-flight")
        seed_in_flight = rows_of(conn, sql_file("seed003_in_flight.sql"))
        cycle = by(analytics.report(conn, "cycle-time"), "workflow_stage")
        sla = by(analytics.report(conn, "sla"), "workflow_stage")
        flows = by(analytics.report(conn, "workflows"), "workflow_code")
        steps = by(analytics.report(conn, "steps"), "step_name")
    assert rework["Flaky"]["reworked"] == 1 and rework["Flaky"]["completed_after_rework"] == 1
    assert rework["Prepare"]["reworked"] == 0  # resumed at the first unfinished step
    assert [(r["job_code"], r["failed_stage"], r["error_class"]) for r in dead] == [
        (bad, "Broken", "permanent")]
    assert in_flight == []
    assert {r["workflow_stage"] for r in seed_in_flight} == {"Optional", "Broken"}
    assert set(cycle) == set(sla) == {"Prepare", "Flaky"}
    assert sla["Prepare"]["avg_sla_seconds"] == 60 and sla["Prepare"]["missed"] == 0
    assert sla["Flaky"]["avg_sla_seconds"] == 300  # no SLA: the step's timeout
    assert (flows["T-REAL"]["completed"], flows["T-REAL"]["sla_missed"]) == (1, 0)
    assert flows["T-BROKEN"]["failed"] == 1
    assert (steps["Flaky"]["executions"], steps["Flaky"]["failures"]) == (2, 1)
    assert steps["Flaky"]["avg_wait_seconds"] > 0  # the retry's back-off
