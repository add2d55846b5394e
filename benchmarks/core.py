"""Core engine figures, measured in one run on this machine (report them as ratios).

- no-op jobs/s with 1 and with 3 worker processes
- enqueue-to-start latency (plain INSERT → started_at) with an idle worker listening
- rescue time after kill -9 of a worker (lease 3 s)

Run: make bench (uses a throw-away embedded PostgreSQL unless MEDIAQ_TEST_DATABASE_URL is set).
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from mediaq import embedded, migrate
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for, with_database

NOOP_JOBS = int(os.environ.get("BENCH_NOOP_JOBS", "600"))


def fresh_env(admin_url: str, root: Path) -> MediaqEnv:
    name = f"mediaq_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    migrate.upgrade(url)
    env = MediaqEnv.create(root / name, url)
    env.apply_workflow(diagnostic_workflow("B-NOOP", {"action": "noop"}))
    env.input_file("in.bin")
    return env


def insert_jobs(env: MediaqEnv, n: int) -> None:
    with env.connect() as conn, conn.transaction():
        conn.execute("""INSERT INTO workflow_jobs (workflow_id, input_file_path)
                        SELECT (SELECT id FROM workflow_definitions
                                 WHERE workflow_code = 'B-NOOP' AND is_current), %s
                          FROM generate_series(1, %s)""", (str(env.inputs / "in.bin"), n))


def noop_throughput(env: MediaqEnv, workers: int) -> float:
    insert_jobs(env, NOOP_JOBS)
    started = time.monotonic()
    procs = [env.start_worker("--burst", "--limits", "cpu=8") for _ in range(workers)]
    for proc in procs:
        proc.wait(600)
    elapsed = time.monotonic() - started
    done = env.one("SELECT count(*) AS n FROM workflow_jobs WHERE status = 'completed'")["n"]
    assert done == NOOP_JOBS, done
    env.stop_workers()
    return NOOP_JOBS / elapsed


def enqueue_to_start(env: MediaqEnv, samples: int = 30) -> list[float]:
    env.start_worker()
    time.sleep(2)
    latencies = []
    for _ in range(samples):
        with env.connect() as conn:
            job_id = conn.execute("""INSERT INTO workflow_jobs (workflow_id, input_file_path)
                VALUES ((SELECT id FROM workflow_definitions WHERE workflow_code = 'B-NOOP'
                          AND is_current), %s) RETURNING id""",
                                  (str(env.inputs / "in.bin"),)).fetchone()["id"]
        row = wait_for(lambda jid=job_id: env.one(
            "SELECT extract(epoch FROM started_at - submitted_at) AS s FROM workflow_jobs"
            " WHERE id = %s AND started_at IS NOT NULL", (jid,)) if env.query(
            "SELECT 1 FROM workflow_jobs WHERE id = %s AND started_at IS NOT NULL", (jid,))
            else None, timeout=10)
        latencies.append(float(row["s"]) * 1000)
        time.sleep(0.1)
    env.stop_workers()
    return latencies


def rescue_after_kill(env: MediaqEnv) -> float:
    env.apply_workflow(diagnostic_workflow("B-SLEEP", {"action": "sleep",
                                                       "parameters": {"seconds": 2}}))
    code = env.submit("B-SLEEP", env.inputs / "in.bin")
    victim = env.start_worker("--id", "victim")
    wait_for(lambda: env.job(code)["status"] == "processing")
    env.start_worker("--id", "rescuer")
    os.kill(victim.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: env.job(code)["worker_id"] == "rescuer", timeout=30)
    rescue = time.monotonic() - killed
    env.stop_workers()
    return rescue


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="mediaq-bench-"))
    os.chmod(root, 0o755)
    admin = os.environ.get("MEDIAQ_TEST_DATABASE_URL")
    try:
        if not admin:
            admin = with_database(embedded.ensure_running(root / "pg"), "postgres")
        one = noop_throughput(fresh_env(admin, root), 1)
        three = noop_throughput(fresh_env(admin, root), 3)
        lat = enqueue_to_start(fresh_env(admin, root))
        rescue = rescue_after_kill(fresh_env(admin, root))
        print(f"no-op jobs/s, 1 worker:   {one:8.1f}")
        print(f"no-op jobs/s, 3 workers:  {three:8.1f}  ({three / one:.2f}x one worker)")
        print(f"enqueue-to-start latency: p50 {statistics.median(lat):.1f} ms, "
              f"max {max(lat):.1f} ms over {len(lat)} plain INSERTs")
        print(f"rescue after kill -9:     {rescue:.1f} s with a 3 s lease "
              f"({rescue / 3:.2f}x the lease)")
    finally:
        if not os.environ.get("MEDIAQ_TEST_DATABASE_URL"):
            embedded.stop(root / "pg")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
