"""Retention: `mediaq prune` over 5,000 old finished jobs (inserted as a plain SQL client
would), the batches' SKIP LOCKED locks, the staging sweep and the worker's hourly pass."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from psycopg_pool import ConnectionPool

from mediaq import db, prune
from mediaq.worker.claimer import Claimer
from mediaq.worker.maintenance import pruner
from mediaq.worker.resources import Capacity
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for

OLD = 5000
RECENT = 200
WAITING = 100
# Old finished jobs: i % 3 = 0 failed, 1 completed, 2 cancelled; 40+ days ago. Each has
# two step executions (four stage events by the trigger), one sent notification, one
# failed one and an estimate. Recent ones finished 5 days ago; waiting ones never did.
INSERT_JOBS = """
INSERT INTO workflow_jobs (workflow_id, input_file_path, status, completed_at, submitted_at,
                           submitted_by)
SELECT w.id, format('/media/in/%%s-%%s.bin', %(kind)s::text, i),
       CASE WHEN %(kind)s::text = 'waiting' THEN 'pending'
            WHEN i %% 3 = 0 THEN 'failed' WHEN i %% 3 = 1 THEN 'completed'
            ELSE 'cancelled' END,
       CASE WHEN %(kind)s::text = 'waiting' THEN NULL
            ELSE now() - %(age)s::interval - i * interval '1 minute' END,
       now() - %(age)s::interval - interval '1 day',
       %(kind)s::text
  FROM generate_series(1, %(n)s) AS i,
       (SELECT id FROM workflow_definitions WHERE workflow_code = 'WF-P') w
"""
INSERT_CHILDREN = """
INSERT INTO step_executions (job_id, step_id, status, started_at, completed_at)
SELECT j.id, s.id, 'completed', j.completed_at - interval '1 minute', j.completed_at
  FROM workflow_jobs j JOIN workflow_steps s ON s.workflow_id = j.workflow_id
 WHERE j.submitted_by = %(kind)s::text;
INSERT INTO workflow_notifications (job_id, notification_type, recipient, channel, status)
SELECT j.id, 'job.finished', 'https://hooks.example/x', 'webhook', st
  FROM workflow_jobs j, unnest(ARRAY['sent', 'failed']) AS st
 WHERE j.submitted_by = %(kind)s::text;
INSERT INTO job_estimates (job_id, estimated_seconds)
SELECT j.id, 60 FROM workflow_jobs j WHERE j.submitted_by = %(kind)s::text;
"""
COUNTS = """
SELECT (SELECT count(*) FROM workflow_jobs) AS jobs,
       (SELECT count(*) FROM step_executions) AS steps,
       (SELECT count(*) FROM media_workflow_events) AS events,
       (SELECT count(*) FROM workflow_notifications) AS notifications,
       (SELECT count(*) FROM job_estimates) AS estimates,
       (SELECT count(*) FROM media_queue) AS queue_rows
"""
ORPHANS = """
SELECT (SELECT count(*) FROM step_executions s
         WHERE NOT EXISTS (SELECT 1 FROM workflow_jobs j WHERE j.id = s.job_id)) AS steps,
       (SELECT count(*) FROM media_workflow_events e
         WHERE NOT EXISTS (SELECT 1 FROM workflow_jobs j WHERE j.id = e.workflow_id)) AS events,
       (SELECT count(*) FROM workflow_notifications n
         WHERE NOT EXISTS (SELECT 1 FROM workflow_jobs j WHERE j.id = n.job_id))
           AS notifications,
       (SELECT count(*) FROM job_estimates x
         WHERE NOT EXISTS (SELECT 1 FROM workflow_jobs j WHERE j.id = x.job_id)) AS estimates
"""


def insert(mq: MediaqEnv, kind: str, n: int, age: str) -> None:
    with mq.connect() as conn:
        conn.execute(INSERT_JOBS, {"kind": kind, "n": n, "age": age})
        if kind != "waiting":
            for statement in INSERT_CHILDREN.split(";")[:-1]:
                conn.execute(statement, {"kind": kind})


@pytest.fixture
def jobs(mq: MediaqEnv) -> MediaqEnv:
    mq.apply_workflow(diagnostic_workflow("WF-P", {"action": "noop"}, {"action": "noop"}))
    insert(mq, "old", OLD, "40 days")
    insert(mq, "recent", RECENT, "5 days")
    insert(mq, "waiting", WAITING, "60 days")
    # An old finished job whose notification is still to be delivered: kept until it is.
    with mq.connect() as conn:
        conn.execute("""
            INSERT INTO workflow_jobs (workflow_id, input_file_path, status, completed_at,
                                       submitted_by)
            SELECT id, '/media/in/outbox.bin', 'completed', now() - interval '90 days',
                   'outbox' FROM workflow_definitions WHERE workflow_code = 'WF-P'""")
        conn.execute("""
            INSERT INTO workflow_notifications (job_id, notification_type, recipient,
                                                channel, status)
            SELECT id, 'job.completed', 'https://hooks.example/x', 'webhook', 'pending'
              FROM workflow_jobs WHERE submitted_by = 'outbox'""")
    return mq


def by_kind(mq: MediaqEnv) -> dict[str, int]:
    rows = mq.query("SELECT submitted_by, count(*) AS n FROM workflow_jobs GROUP BY 1")
    return {r["submitted_by"]: r["n"] for r in rows}


def test_prune_deletes_exactly_the_old_finished_jobs_and_their_children(
        jobs: MediaqEnv, tmp_path: Path) -> None:
    before = jobs.one(COUNTS)
    assert before["jobs"] == OLD + RECENT + WAITING + 1
    assert before["events"] == 4 * (OLD + RECENT)  # started + completed, two steps each

    dry = jobs.cli("prune", "--dry-run", "--older-than", "30d")
    assert dry.stdout.strip() == (f"would prune {OLD} jobs ({2 * OLD} step executions, "
                                  f"{4 * OLD} events, {2 * OLD} notifications)")
    assert jobs.one(COUNTS) == before

    archive = tmp_path / "pruned.jsonl"
    result = jobs.cli("prune", "--older-than", "30d", "--archive", str(archive))
    assert result.stdout.strip() == (f"pruned {OLD} jobs ({2 * OLD} step executions, "
                                     f"{4 * OLD} events, {2 * OLD} notifications) in 5 batches")
    assert by_kind(jobs) == {"recent": RECENT, "waiting": WAITING, "outbox": 1}
    after = jobs.one(COUNTS)
    assert after == {"jobs": RECENT + WAITING + 1, "steps": 2 * RECENT, "events": 4 * RECENT,
                     "notifications": 2 * RECENT + 1, "estimates": RECENT,
                     "queue_rows": before["queue_rows"] - OLD}
    assert jobs.one(ORPHANS) == {"steps": 0, "events": 0, "notifications": 0, "estimates": 0}

    lines = archive.read_text(encoding="utf-8").splitlines()
    assert len(lines) == OLD
    records = [json.loads(line) for line in lines]
    assert len({r["job_code"] for r in records}) == OLD
    assert {r["submitted_by"] for r in records} == {"old"}
    assert all(len(r["step_executions"]) == 2 for r in records)
    assert {r["status"] for r in records} == {"completed", "failed", "cancelled"}

    again = jobs.cli("prune", "--older-than", "30d", "--json")
    assert json.loads(again.stdout)["jobs"] == 0


def test_keep_dead_letters_keeps_failed_jobs(jobs: MediaqEnv) -> None:
    result = jobs.cli("prune", "--keep-dead-letters", "--json")  # retention_days: 30
    report = json.loads(result.stdout)
    failed = OLD // 3
    assert report["jobs"] == OLD - failed
    assert report["batches"] == 4
    kept = jobs.query("SELECT status, count(*) AS n FROM workflow_jobs "
                      "WHERE submitted_by = 'old' GROUP BY 1")
    assert kept == [{"status": "failed", "n": failed}]


def test_the_default_age_is_retention_days(jobs: MediaqEnv) -> None:
    # Nothing free is 60 days old (the 90-day-old outbox job waits for its notification).
    jobs.env["MEDIAQ_RETENTION_DAYS"] = "60"
    assert json.loads(jobs.cli("prune", "--dry-run", "--json").stdout)["jobs"] == 0
    jobs.env.pop("MEDIAQ_RETENTION_DAYS")  # the default: 30
    report = json.loads(jobs.cli("prune", "--dry-run", "--json").stdout)
    assert report["jobs"] == OLD
    assert report["by_status"] == {"completed": 1667, "failed": 1666, "cancelled": 1667}


def test_retention_zero_needs_older_than(jobs: MediaqEnv) -> None:
    jobs.env["MEDIAQ_RETENTION_DAYS"] = "0"
    result = jobs.cli("prune", check=False)
    assert result.returncode == 1
    assert "retention_days is 0" in result.stderr
    assert jobs.one(COUNTS)["jobs"] == OLD + RECENT + WAITING + 1
    with pytest.raises(Exception, match="older-than"):
        prune.parse_age("30 weeks")
    assert prune.parse_age("12h") == timedelta(hours=12)
    assert prune.parse_age("7") == timedelta(days=7)


def test_outputs_are_removed_only_with_outputs_and_only_under_the_root(
        jobs: MediaqEnv, tmp_path: Path) -> None:
    old_code = jobs.one("SELECT job_code FROM workflow_jobs WHERE submitted_by = 'old' "
                        "ORDER BY id LIMIT 1")["job_code"]
    recent_code = jobs.one("SELECT job_code FROM workflow_jobs WHERE submitted_by = 'recent' "
                           "LIMIT 1")["job_code"]
    for code in (old_code, recent_code):
        (jobs.outputs / code).mkdir()
        (jobs.outputs / code / "out.bin").write_bytes(b"x")
    # A job folder that is a symlink out of the root: never followed.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.bin").write_bytes(b"x")
    failed = jobs.one("SELECT job_code FROM workflow_jobs WHERE submitted_by = 'old' "
                      "AND status = 'failed' ORDER BY id LIMIT 1")["job_code"]
    (jobs.outputs / failed).symlink_to(elsewhere)

    jobs.cli("prune", "--older-than", "30d", "--keep-dead-letters")
    assert (jobs.outputs / old_code).is_dir()  # rows gone, files kept without --outputs
    jobs.cli("prune", "--older-than", "30d", "--outputs")  # the failed ones now
    assert (jobs.outputs / old_code).is_dir()  # pruned by the earlier run: not this one's
    assert (jobs.outputs / failed).is_symlink()  # a link is never followed nor removed
    assert (jobs.outputs / recent_code / "out.bin").is_file()
    assert (elsewhere / "keep.bin").is_file()
    # A job pruned with --outputs loses its folder.
    code = jobs.one("SELECT job_code FROM workflow_jobs WHERE submitted_by = 'recent' "
                    "ORDER BY id DESC LIMIT 1")["job_code"]
    (jobs.outputs / code).mkdir()
    (jobs.outputs / code / "out.bin").write_bytes(b"x")
    jobs.cli("prune", "--older-than", "1d", "--outputs")
    assert not (jobs.outputs / code).exists()
    assert not (jobs.outputs / recent_code).exists()
    assert jobs.outputs.is_dir() and (elsewhere / "keep.bin").is_file()


# ---------------------------------------------------------------------------------------
# Locks: a prune batch never blocks a claim
# ---------------------------------------------------------------------------------------


@pytest.fixture
def pool(jobs: MediaqEnv) -> Iterator[ConnectionPool[db.Connection]]:
    pool = db.make_pool(jobs.url, size=2)
    try:
        yield pool
    finally:
        pool.close()


def test_a_claim_succeeds_while_a_prune_batch_holds_its_locks(
        jobs: MediaqEnv, pool: ConnectionPool[db.Connection]) -> None:
    claimer = Claimer(pool, worker_id="w-prune", host="h-prune",
                      capacity=Capacity(categories=("cpu",), limits={"cpu": 1},
                                        vram_budget_mb=0),
                      queues=None, lease_seconds=300)
    claimer.register("test")
    with db.connect(jobs.url, autocommit=True) as holder, holder.transaction():
        cutoff = prune.cutoff_for(holder, timedelta(days=30))
        params = {"statuses": list(prune.FINISHED), "cutoff": cutoff, "batch": prune.BATCH}
        locked = db.fetch_all(holder, "jobs_prune_lock_batch", params)
        assert len(locked) == prune.BATCH
        counts = db.fetch_one(holder, "jobs_prune_delete", {"ids": [r["id"] for r in locked]})
        assert counts is not None and counts["jobs"] == prune.BATCH
        # Still uncommitted: the batch holds its row locks. A worker claims regardless ...
        result: list[object] = []
        claiming = threading.Thread(target=lambda: result.append(claimer.claim("cpu")))
        claiming.start()
        claiming.join(timeout=5)
        assert not claiming.is_alive(), "the claim waited for the prune batch"
        assert result and result[0] is not None
        # ... and a second pruner skips the locked batch instead of waiting for it.
        with db.connect(jobs.url, autocommit=True) as other, other.transaction():
            other.execute("SET LOCAL lock_timeout = '2s'")
            theirs = db.fetch_all(other, "jobs_prune_lock_batch", params)
            assert len(theirs) == prune.BATCH
            assert not {r["id"] for r in theirs} & {r["id"] for r in locked}
    assert jobs.one(COUNTS)["jobs"] == OLD + RECENT + WAITING + 1 - prune.BATCH


# ---------------------------------------------------------------------------------------
# The staging sweep and the worker's hourly pass
# ---------------------------------------------------------------------------------------


def aged(folder: Path, hours: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "part.bin").write_bytes(b"x")
    then = time.time() - hours * 3600
    os.utime(folder, (then, then))
    return folder


def test_the_staging_sweep_removes_orphans_and_keeps_live_jobs(jobs: MediaqEnv) -> None:
    staging = jobs.outputs / ".staging"
    finished = jobs.one("SELECT job_code FROM workflow_jobs WHERE submitted_by = 'recent' "
                        "LIMIT 1")["job_code"]
    waiting = jobs.one("SELECT job_code FROM workflow_jobs WHERE submitted_by = 'waiting' "
                       "LIMIT 1")["job_code"]
    orphan = aged(staging / f"{finished}.a1.s2", hours=2)
    gone = aged(staging / "JOB-GONE-1.a3.s1", hours=5)
    live = aged(staging / f"{waiting}.a1.s1", hours=30)
    fresh = aged(staging / "JOB-GONE-2.a1.s1", hours=0.1)
    other = aged(staging / "not-a-staging-folder", hours=9)
    with db.connect(jobs.url, autocommit=True) as conn:
        removed = prune.sweep_staging(conn, staging)
    assert sorted(removed) == sorted([orphan, gone])
    assert not orphan.exists() and not gone.exists()
    assert live.is_dir() and fresh.is_dir() and other.is_dir()


def test_the_worker_pass_runs_once_an_hour_for_the_deployment(jobs: MediaqEnv) -> None:
    staging = jobs.outputs / ".staging"
    orphan = aged(staging / "JOB-GONE-9.a1.s1", hours=2)
    with db.connect(jobs.url, autocommit=True) as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", (pruner.LOCK_KEY,))
        with db.connect(jobs.url, autocommit=True) as conn:
            assert pruner.prune_pass(conn, 30, staging) is None  # another session prunes
        blocker.execute("SELECT pg_advisory_unlock(%s)", (pruner.LOCK_KEY,))
    assert jobs.one(COUNTS)["jobs"] == OLD + RECENT + WAITING + 1 and orphan.is_dir()

    with db.connect(jobs.url, autocommit=True) as conn:
        report = pruner.prune_pass(conn, 30, staging)
        assert report is not None and report.jobs == OLD and report.batches == 5
        assert not orphan.exists()
        insert(jobs, "later", 10, "40 days")
        assert pruner.prune_pass(conn, 30, staging) is None  # pruned less than an hour ago
        conn.execute("UPDATE settings SET value = to_jsonb(now() - interval '61 minutes') "
                     "WHERE key = 'maintenance_last_prune'")
        report = pruner.prune_pass(conn, 0, staging)  # retention 0: the sweep only
        assert report is not None and report.jobs == 0
        assert by_kind(jobs)["later"] == 10
    with db.connect(jobs.url, autocommit=True) as other:  # the lock went with the pass
        row = other.execute("SELECT pg_try_advisory_lock(%s) AS locked",
                            (pruner.LOCK_KEY,)).fetchone()
        assert row is not None and row["locked"]


def test_a_worker_starts_and_stops_with_the_pruner(mq: MediaqEnv) -> None:
    proc = mq.start_worker()
    try:
        wait_for(lambda: "worker:started" in mq.worker_log(proc), timeout=60)
        mq.stop_workers()  # SIGTERM: the pruner stops with the rest
        assert proc.returncode == 0
    finally:
        mq.stop_workers()
    log_text = (mq.root / "worker-0.log").read_text()
    assert "worker:started" in log_text and "pruner:error" not in log_text
    assert mq.run_burst().returncode == 0  # a burst worker does not prune
