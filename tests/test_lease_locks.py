"""Lease renewals and rescues never meet in a lock cycle, and a renewal that commits
while a rescuer waits for its row keeps the task (worker/heartbeat.py, leases_renew,
jobs_rescue_expired, workers_mark_lost, worker/maintenance/rescuer.py).

Found on three hosts (tests/fleet/test_fleet_tasks.py, about one kill -9 in eight): a
living worker's heartbeat failed on a deadlock on job_tasks and the rescue took its task
too. Its transaction held its workers row (worker_heartbeat), then waited for its task
rows (leases_renew); the rescuer's held job rows, then the task rows it rescued, then
waited for that workers row (workers_mark_lost, in the same transaction). Each session
here takes its locks in a chosen order, and waits are seen in pg_stat_activity, so the
interleavings are the same on every run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from mediaq import db, workflows
from mediaq.submit import submit
from mediaq.worker.claimer import Claimer
from mediaq.worker.heartbeat import Heartbeat
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.maintenance.rescuer import rescue_dead
from mediaq.worker.resources import Capacity
from tests.helpers import diagnostic_workflow, wait_for

# The heartbeat's and the rescuer's statements as they were when the cycle was found.
OLD_HEARTBEAT = "UPDATE workers SET heartbeat_at = now() WHERE worker_id = %s"
OLD_RENEW = ("UPDATE job_tasks SET lease_expires_at = now() + interval '3 seconds'"
             " WHERE id = %s AND worker_id = %s AND state = 'running'")
OLD_MARK_LOST = ("UPDATE workers SET status = 'stopped', stopped_at = heartbeat_at"
                 " WHERE status <> 'stopped' AND heartbeat_at < now() - interval '3 seconds'")


@contextmanager
def session(url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A connection of its own (not in autocommit: the test says when it commits)."""
    conn = psycopg.connect(url, row_factory=dict_row,
                           options="-c search_path=mediaq,public")
    try:
        yield conn
    finally:
        conn.close()


def pid(conn: psycopg.Connection[dict[str, Any]]) -> int:
    return int(conn.info.backend_pid)


def blocked_by(pool: ConnectionPool[db.Connection], holder: int) -> bool:
    """Whether some session waits for a lock ``holder`` holds."""
    with pool.connection() as conn:
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_stat_activity"
                           " WHERE %s = ANY (pg_blocking_pids(pid))) AS blocked",
                           (holder,)).fetchone()
    return bool(row and row["blocked"])


class Background(threading.Thread):
    """Run ``fn`` on a thread; its result or its exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def outcome(self) -> Any:
        self.join(120)  # a guard against a hang, not a timing: the waits end on commits
        assert not self.is_alive(), "still waiting"
        if self.error is not None:
            raise self.error
        return self.result


def claim(pool: ConnectionPool[db.Connection], worker_id: str) -> JobHandle:
    claimer = Claimer(pool, worker_id=worker_id, host="test-host",
                      capacity=Capacity(categories=("cpu",), limits={"cpu": 2},
                                        vram_budget_mb=0),
                      queues=None, lease_seconds=300)
    claimer.register("test")
    claimed = claimer.claim("cpu")
    assert claimed is not None
    return claimed.handle(pool, worker_id)


@pytest.fixture
def two_workers(pool: ConnectionPool[db.Connection],
                tmp_path: Path) -> tuple[JobHandle, JobHandle]:
    """One job of two independent steps, each task claimed by a worker of its own (the
    one to be lost first, then the bystander); both leases have run out."""
    source = tmp_path / "in.bin"
    source.write_bytes(b"x")
    with db.transaction(pool) as conn:
        workflows.apply(conn, workflows.normalise(diagnostic_workflow(
            "LOCKS", {"action": "noop"}, {"action": "noop", "needs": []})))
        submit(conn, "LOCKS", source)
    lost, bystander = claim(pool, "lost-worker"), claim(pool, "bystander")
    assert lost.job_id == bystander.job_id and lost.task_ids != bystander.task_ids
    with db.transaction(pool) as conn:
        conn.execute("UPDATE job_tasks SET lease_expires_at = now() - interval '1 second'"
                     " WHERE job_id = %s", (lost.job_id,))
    return lost, bystander


def task(pool: ConnectionPool[db.Connection], task_id: int) -> dict[str, Any]:
    with pool.connection() as conn:
        row = conn.execute("SELECT state, worker_id, rescue_count, lease_expires_at > now()"
                           " AS leased FROM job_tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return row


def heartbeat(pool: ConnectionPool[db.Connection], handle: JobHandle) -> Heartbeat:
    return Heartbeat(pool, handle.worker_id, 3, {1: handle}, threading.Lock())


def test_a_renewal_committed_while_the_rescuer_waits_keeps_the_task(
        pool: ConnectionPool[db.Connection], database_url: str,
        two_workers: tuple[JobHandle, JobHandle]) -> None:
    """The rescuer saw both leases run out; the bystander's renewal holds its row and
    commits while the rescuer waits for it: only the lost worker's task is rescued."""
    lost, bystander = two_workers
    with session(database_url) as renewal:
        rows = db.fetch_all(renewal, "leases_renew", {
            "worker_id": bystander.worker_id, "lease_seconds": 300,
            "task_ids": bystander.task_ids, "task_attempts": bystander.task_attempts})
        assert [r["renewed"] for r in rows] == [True]
        rescuer = Background(lambda: rescue_dead(pool, "rescuer", max_rescues=5))
        rescuer.start()
        wait_for(lambda: blocked_by(pool, pid(renewal)), message="the rescuer waiting")
        renewal.commit()
        assert [r["id"] for r in rescuer.outcome()] == [lost.job_id]
    assert task(pool, lost.task_ids[0])["state"] == "ready"
    kept = task(pool, bystander.task_ids[0])
    assert kept == {"state": "running", "worker_id": "bystander", "rescue_count": 0,
                    "leased": True}


def test_the_old_statement_pair_deadlocks(pool: ConnectionPool[db.Connection],
                                          database_url: str,
                                          two_workers: tuple[JobHandle, JobHandle]) -> None:
    """The cycle as it was: heartbeat (workers row, then task rows) against the rescue
    and workers_mark_lost in one transaction (job, task rows, then workers rows)."""
    _, bystander = two_workers
    with db.transaction(pool) as conn:  # silent past its lease, as a stalled worker is
        conn.execute("UPDATE workers SET heartbeat_at = now() - interval '1 minute'"
                     " WHERE worker_id = 'bystander'")
    with session(database_url) as beat, session(database_url) as rescue:
        beat.execute(OLD_HEARTBEAT, ("bystander",))
        rescued = db.fetch_all(rescue, "jobs_rescue_expired",
                               {"worker_id": "rescuer", "max_rescues": 5})
        assert [r["id"] for r in rescued] == [bystander.job_id]
        mark_lost = Background(lambda: rescue.execute(OLD_MARK_LOST))
        mark_lost.start()
        wait_for(lambda: blocked_by(pool, pid(beat)), message="the rescuer waiting")
        renew = Background(lambda: beat.execute(OLD_RENEW, (bystander.task_ids[0],
                                                            "bystander")))
        renew.start()
        errors = []
        for waiter in (mark_lost, renew):
            try:
                waiter.outcome()
            except psycopg.errors.DeadlockDetected as exc:
                errors.append(exc)
        assert len(errors) == 1, errors


def test_the_heartbeat_never_waits_for_a_rescue_and_retries_a_skipped_task(
        pool: ConnectionPool[db.Connection], database_url: str,
        two_workers: tuple[JobHandle, JobHandle]) -> None:
    """The same interleaving today. The rescuer holds both tasks (their leases ran out)
    in an open transaction: the heartbeat's renewal skips the held row, writes the
    worker's heartbeat and reports the renewal incomplete (the loop tries again within
    a fraction of a second), without waiting; workers_mark_lost skips a workers row a
    heartbeat holds. Once the rescue commits, the next renewal finds the task gone and
    stops the handle."""
    _, bystander = two_workers
    with db.transaction(pool) as conn:
        conn.execute("UPDATE workers SET heartbeat_at = now() - interval '1 minute'"
                     " WHERE worker_id = 'bystander'")
    beat = heartbeat(pool, bystander)
    with session(database_url) as rescue, session(database_url) as other_beat:
        rescued = db.fetch_all(rescue, "jobs_rescue_expired",
                               {"worker_id": "rescuer", "max_rescues": 5})
        assert [r["id"] for r in rescued] == [bystander.job_id]
        renewal = Background(lambda: beat._renew([bystander]))
        renewal.start()
        assert renewal.outcome() is False  # the task row was held: renew again soon
        assert not bystander.stop_signal.is_set()  # still its own as far as it knows
        # A heartbeat holding the workers row (silent past its lease) does not hold the
        # rescuer up either.
        with db.transaction(pool) as conn:
            conn.execute("UPDATE workers SET heartbeat_at = now() - interval '1 minute'"
                         " WHERE worker_id = 'bystander'")
        other_beat.execute(OLD_HEARTBEAT, ("bystander",))
        marked = Background(lambda: db.execute(rescue, "workers_mark_lost",
                                               {"lease_seconds": 3}))
        marked.start()
        assert marked.outcome() == 0
        other_beat.rollback()
        rescue.commit()
    assert beat._renew([bystander]) is True  # nothing of its own is left to renew
    assert isinstance(bystander.stop_signal.reason, Exception)
    assert "was lost" in str(bystander.stop_signal.reason)
    assert task(pool, bystander.task_ids[0])["state"] == "ready"
    with pool.connection() as conn:
        row = conn.execute("SELECT heartbeat_at > now() - interval '1 minute' AS fresh"
                           " FROM workers WHERE worker_id = 'bystander'").fetchone()
    assert row is not None and row["fresh"]


def test_a_renewal_skips_a_task_its_commit_holds_and_renews_the_rest(
        pool: ConnectionPool[db.Connection], database_url: str,
        two_workers: tuple[JobHandle, JobHandle]) -> None:
    """A worker running two tasks, one of them being committed (its job row, then its
    task row locked, files being published): the other task's lease is renewed at once."""
    lost, bystander = two_workers
    both = JobHandle(pool, "bystander", bystander.job_id, bystander.job_code,
                     bystander.attempt, "cpu")
    with db.transaction(pool) as conn:  # both tasks the bystander's, the first's row held
        conn.execute("UPDATE job_tasks SET worker_id = 'bystander' WHERE id = %s",
                     (lost.task_ids[0],))
    for index, handle in enumerate((lost, bystander)):
        both.add_task(handle.task_ids[0], handle.task_attempts[0], 0, index)
    with session(database_url) as commit:
        db.fetch_one(commit, "job_lock_owned", {**both.fence})
        commit.execute("UPDATE job_tasks SET progress = 1 WHERE id = %s", (lost.task_ids[0],))
        assert heartbeat(pool, both)._renew([both]) is False
        assert task(pool, bystander.task_ids[0])["leased"]
        assert not task(pool, lost.task_ids[0])["leased"]
        commit.rollback()
    assert heartbeat(pool, both)._renew([both]) is True
    assert task(pool, lost.task_ids[0])["leased"]
    assert not both.stop_signal.is_set()
