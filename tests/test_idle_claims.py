"""An idle worker writes nothing (issue 19): its polls, and any claim that finds nothing
it can take, neither lock nor change a row, so fifty idle processes cost PostgreSQL no
WAL, no transaction ids and no row locks.

The real worker's producer (its claims in every category, then its polls) runs in
process against a queue that holds only work it cannot take: a GPU task larger than
its VRAM budget, a task of a paused queue, a task of a job whose pause was asked for.
Every row of the tables a claim touches keeps its version (ctid, xmin) and stays
unlocked (xmax) across the polls. Structural: no timing is asserted.

The processes of one machine also share its duties (notifier, triggers): one runs them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mediaq import db
from mediaq.config import Settings
from mediaq.worker.daemon import Worker, WorkerOptions
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for

CLAIM_TABLES = ("worker_slots", "worker_hosts", "job_tasks", "workflow_jobs", "queues",
                "step_executions")
POLLS = 20


@pytest.fixture
def worker(mq: MediaqEnv, settings: Settings) -> Iterator[Worker]:
    options = WorkerOptions(categories=("cpu", "gpu_encode"),
                            limits={"cpu": 2, "gpu_encode": 1}, vram_mb=1000,
                            worker_id="idle-worker")
    worker = Worker(settings, mq.url, options)
    worker.claimer.register("test")
    assert worker.storage.check_now() is None  # as the worker's first check before claims
    try:
        yield worker
    finally:
        worker.pool.close()


def row_versions(mq: MediaqEnv) -> dict[str, list[tuple[Any, ...]]]:
    """Every row's version and lock of the tables a claim touches."""
    return {table: [(r["ctid"], r["xmin"], r["xmax"]) for r in mq.query(
        f"SELECT ctid::text, xmin::text, xmax::text FROM mediaq.{table} ORDER BY ctid")]
        for table in CLAIM_TABLES}


def submit_unclaimable(mq: MediaqEnv) -> None:
    """Ready tasks this worker may not take: too much VRAM, a paused queue, a paused job."""
    source = mq.input_file("in.bin")
    mq.apply_workflow(diagnostic_workflow("T-BIG-GPU", {"action": "noop"},
                                          resource_category="gpu_encode", vram_required=4000))
    mq.apply_workflow(diagnostic_workflow("T-HELD", {"action": "noop"}, queue_name="held"))
    mq.apply_workflow(diagnostic_workflow("T-CPU", {"action": "noop"}))
    mq.submit("T-BIG-GPU", source)
    mq.submit("T-HELD", source)
    paused = mq.submit("T-CPU", source)
    with mq.connect() as conn:
        conn.execute("INSERT INTO mediaq.queues (queue_name, paused) VALUES ('held', true)")
        conn.execute("UPDATE mediaq.workflow_jobs SET pause_requested = true"
                     " WHERE job_code = %s", (paused,))


def test_idle_polls_and_empty_claims_write_nothing(mq: MediaqEnv, worker: Worker) -> None:
    submit_unclaimable(mq)
    ready = mq.one("SELECT count(*) AS n FROM mediaq.job_tasks WHERE state = 'ready'")
    assert ready["n"] == 3
    # The first round claims in every category and tells why the GPU job waits (a
    # reason written once, on that job's row); from then on the worker only polls.
    start = row_versions(mq)
    assert not worker._claim_while_room()
    reason = mq.one("SELECT waiting_reason FROM mediaq.workflow_jobs j"
                    " JOIN mediaq.workflow_definitions d ON d.id = j.workflow_id"
                    " WHERE d.workflow_code = 'T-BIG-GPU'")["waiting_reason"]
    assert "needs more VRAM" in reason
    before = row_versions(mq)
    for _ in range(POLLS):
        assert worker.storage.check_now() is None  # so the producer does claim
        worker._forget_idle(everything=True)  # a poll interval passed without wake-up
        assert not worker._claim_while_room()
        worker._notice("cpu")  # a wake-up for work it cannot take
        worker._forget_idle(everything=False)
        assert not worker._claim_while_room()
        # Claims that find nothing, whichever way they are asked for.
        for category in ("cpu", "gpu_encode"):
            assert worker.claimer.claim(category) is None
        held = mq.one("SELECT id FROM mediaq.workflow_jobs WHERE pause_requested")["id"]
        assert worker.claimer.claim("cpu", prefer_job_id=held, only_preferred=True) is None
    after = row_versions(mq)
    assert after == before
    for table in ("worker_slots", "worker_hosts", "job_tasks"):  # the first round's too
        assert after[table] == start[table], table


def test_a_poll_still_finds_work(mq: MediaqEnv, worker: Worker) -> None:
    """The read-only look sees what a claim can take, and the claim takes it: a CPU task,
    and a GPU task that fits the VRAM (charged to the machine's ledger)."""
    source = mq.input_file("in.bin")
    assert worker.claimer.ready_categories(["cpu", "gpu_encode"]) == set()
    mq.apply_workflow(diagnostic_workflow("T-CPU", {"action": "noop"}))
    mq.apply_workflow(diagnostic_workflow("T-GPU", {"action": "noop"},
                                          resource_category="gpu_encode", vram_required=600))
    cpu, gpu = mq.submit("T-CPU", source), mq.submit("T-GPU", source)
    assert worker.claimer.ready_categories(["cpu", "gpu_encode"]) == {"cpu", "gpu_encode"}
    claimed = [worker.claimer.claim("cpu"), worker.claimer.claim("gpu_encode")]
    assert [c.job_code if c else None for c in claimed] == [cpu, gpu]
    ledger = mq.one("SELECT vram_reserved_mb FROM mediaq.worker_hosts WHERE host = %s",
                    (worker.claimer.host,))
    assert ledger["vram_reserved_mb"] == 600
    assert worker.claimer.ready_categories(["cpu", "gpu_encode"]) == set()
    with db.transaction(worker.pool) as conn:  # the run-ahead claim of a finished chain
        assert db.fetch_one(conn, "job_lock_owned", {
            "job_id": claimed[0].id if claimed[0] else 0, "attempt": 1,
            "worker_id": "idle-worker", "task_ids": [claimed[0].task_id if claimed[0] else 0],
            "task_attempts": [1]}) is not None


def duty_sessions(mq: MediaqEnv) -> dict[str, int]:
    rows = mq.query("SELECT application_name AS app, count(*) AS n FROM pg_stat_activity"
                    " WHERE datname = current_database()"
                    "   AND application_name IN ('mediaq-notifier', 'mediaq-triggers')"
                    " GROUP BY 1")
    return {r["app"]: r["n"] for r in rows}


def test_one_process_a_machine_runs_its_duties(mq: MediaqEnv) -> None:
    """Three worker processes of one machine run one notifier and one trigger runner
    between them (their sessions say so); when that process is killed, another of the
    machine's processes takes the duties over."""
    procs = [mq.start_worker("--jobs", "1", host_id="duty-host") for _ in range(3)]
    wait_for(lambda: mq.one("SELECT count(*) AS n FROM mediaq.workers"
                            " WHERE status = 'running'")["n"] == 3, message="3 workers")
    wait_for(lambda: duty_sessions(mq) == {"mediaq-notifier": 1, "mediaq-triggers": 1},
             timeout=30, message="one notifier and one trigger runner")
    holders = [p for p in procs if "listen:host_duties" in mq.worker_log(p)]
    assert len(holders) == 1
    holders[0].kill()
    holders[0].wait(15)
    wait_for(lambda: sum("listen:host_duties" in mq.worker_log(p) for p in procs
                         if p is not holders[0]) == 1, timeout=60, message="duties taken over")
    wait_for(lambda: duty_sessions(mq) == {"mediaq-notifier": 1, "mediaq-triggers": 1},
             timeout=30, message="one notifier and one trigger runner again")
