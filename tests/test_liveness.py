"""A dead worker is known dead as soon as its session is gone, and wake-ups go only to
the processes that can use them (worker/listener.py, jobs_rescue_expired, wake_channel)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from mediaq import db
from mediaq.worker.maintenance.rescuer import rescue_dead
from tests.helpers import MediaqEnv, claim_in_process, diagnostic_workflow, wait_for

LONG_LEASE = "300"  # far beyond every wait below: only the session can explain a rescue


def test_kill_9_worker_is_rescued_long_before_its_lease(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow(
        "L-KILL", {"action": "sleep", "parameters": {"seconds": 1.5}}))
    code = mq.submit("L-KILL", mq.input_file("k.bin"))
    doomed = mq.start_worker("--id", "doomed", lease_seconds=LONG_LEASE)
    wait_for(lambda: mq.job(code)["status"] == "processing", timeout=30)
    assert mq.one("SELECT liveness_key IS NOT NULL AS held FROM workers "
                  "WHERE worker_id = 'doomed'")["held"]
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(10)
    mq.start_worker("--id", "heir", lease_seconds=LONG_LEASE)
    # Generous, yet a small fraction of the 300 s lease the job still holds.
    wait_for(lambda: mq.job(code)["status"] == "completed", timeout=60)
    job = mq.job(code)
    assert job["worker_id"] == "heir"
    assert job["rescue_count"] == 1 and job["retry_count"] == 0
    assert "Session of doomed ended; rescued by heir" in job["log"]
    assert mq.one("SELECT status FROM workers WHERE worker_id = 'doomed'")["status"] == "stopped"


def test_a_live_session_keeps_its_jobs_until_the_lease(database_url: str, tmp_path: Path) -> None:
    """A worker whose session lives (frozen, cut off, or simply busy) is not rescued by
    the session check; once that session ends, the next pass rescues its job."""
    source = tmp_path / "in.bin"
    source.write_bytes(b"x")
    pool = db.make_pool(database_url, size=2)
    try:
        _, claimed = claim_in_process(pool, "L-LIVE", source,
                                      {"action": "sleep", "parameters": {"seconds": 1}})
        worker_id = "l-live-worker"
        with _session(database_url) as holder:
            held = holder.execute("SELECT pg_try_advisory_lock(28017, hashtext(%s)) AS held",
                                  (worker_id,)).fetchone()
            assert held and held["held"]
            with db.transaction(pool) as conn:
                db.execute(conn, "worker_liveness_set",
                           {"worker_id": worker_id, "liveness": True})
            assert rescue_dead(pool, "rescuer", max_rescues=5) == []
        # The holder's session ended: its lock is free, its job goes back at once.
        rescued = rescue_dead(pool, "rescuer", max_rescues=5)
        assert [r["id"] for r in rescued] == [claimed.id]
        with db.transaction(pool) as conn:
            row = conn.execute("SELECT status, lease_expires_at > now() AS leased, log "
                               "FROM workflow_jobs WHERE id = %s", (claimed.id,)).fetchone()
        assert row is not None and row["status"] == "pending"
        assert f"Session of {worker_id} ended" in row["log"]
        # The rescuer let the lock go with its transaction: a restarted worker takes it.
        with _session(database_url) as again:
            retaken = db.fetch_one(again, "worker_liveness_lock", {"worker_id": worker_id})
            assert retaken and retaken["held"]
    finally:
        pool.close()


def test_a_worker_without_a_liveness_lock_waits_for_its_lease(database_url: str,
                                                              tmp_path: Path) -> None:
    """Workers of earlier releases hold no lock (liveness_key NULL): never rescued early."""
    source = tmp_path / "in.bin"
    source.write_bytes(b"x")
    pool = db.make_pool(database_url, size=2)
    try:
        claim_in_process(pool, "L-OLD", source, {"action": "noop"})
        assert rescue_dead(pool, "rescuer", max_rescues=5) == []
    finally:
        pool.close()


def test_wake_ups_go_to_the_category_and_host_that_can_use_them(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("L-CPU", {"action": "noop"}))
    with _session(mq.url) as listener, _session(mq.url) as admin:
        channels = {r["category"]: r for r in db.fetch_all(
            listener, "wake_channels", {"host": "h1", "categories": ["cpu", "gpu"]})}
        for name in (channels["cpu"]["work"], channels["gpu"]["work"],
                     channels["cpu"]["slot"]):
            listener.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(name)))
        listener.execute("LISTEN mediaq_jobs")
        code = mq.submit("L-CPU", mq.input_file("w.bin"))
        got = _drain(listener)
        # One wake-up, on the CPU work channel only: nothing on the GPU's or the old
        # everybody channel.
        assert got == [(channels["cpu"]["work"], "cpu")]
        # A slot freed on host h1 while work waits wakes h1's cpu slot channel only.
        job_id = mq.job(code)["id"]
        admin.execute("INSERT INTO worker_hosts (host) VALUES ('h1'), ('h2')")
        admin.execute("INSERT INTO worker_slots (host, category, slot) VALUES ('h1', 'cpu', 1),"
                      " ('h2', 'cpu', 1)")
        other = mq.submit("L-CPU", mq.input_file("w2.bin"))
        _drain(listener)
        admin.execute("UPDATE workflow_jobs SET status = 'processing', worker_id = 'w', "
                      "attempt = attempt + 1, lease_expires_at = now() + interval '1 min' "
                      "WHERE id = %s", (job_id,))
        admin.execute("UPDATE worker_slots SET job_id = %s, job_attempt = "
                      "(SELECT attempt FROM workflow_jobs WHERE id = %s), worker_id = 'w', "
                      "taken_at = now() WHERE host = 'h1'", (job_id, job_id))
        _drain(listener)
        admin.execute("UPDATE workflow_jobs SET status = 'completed', completed_at = now(), "
                      "lease_expires_at = NULL WHERE id = %s", (job_id,))
        assert _drain(listener) == [(channels["cpu"]["slot"], "cpu")]
        assert mq.job(other)["status"] == "pending"


@contextmanager
def _session(url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
    try:
        conn.execute("SET search_path = mediaq, public")
        yield conn
    finally:
        conn.close()


def _drain(conn: psycopg.Connection[dict[str, Any]]) -> list[tuple[str, str]]:
    """The notifications delivered so far (a round trip makes the server send them)."""
    conn.execute("SELECT 1")
    return [(n.channel, n.payload) for n in conn.notifies(timeout=0.2)]
