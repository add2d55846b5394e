"""Queue figures, side by side in one run on one PostgreSQL server (read the ratios).

- no-op single-step jobs through ``mediaq worker`` with all of its bookkeeping (step
  executions, events, outbox rows) vs pgqueuer, procrastinate and a bare SKIP LOCKED
  queue (1 job per transaction and batches of 10, 2 worker processes each)
- enqueue-to-start median with an idle worker vs the bare LISTEN/NOTIFY floor
- batch submission (mediaq.submit.submit_batch) vs one-by-one submit()
- a job's time outside its action (claim, bookkeeping, progress) from the database
- a worker's RSS over 500 consecutive jobs
- rescue after kill -9 of a worker (3 s lease; and default settings, several rounds)

Run: make bench (BENCH_QUICK=1 for a shorter run; MEDIAQ_TEST_DATABASE_URL to use a
server of your own; pgqueuer and procrastinate go into .bench/peers-venv on first use).
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    BENCH_DIR,
    create_database,
    drain,
    fresh_env,
    insert_jobs,
    peers_python,
    rss_mb,
    run_json,
    scaled,
    server,
    start_fleet,
    table,
    verdict,
    write_results,
)
from mediaq.submit import submit, submit_batch
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for

NOOP_JOBS = scaled(2000, 600)
PEER_JOBS = scaled(4000, 1500)
PROCRASTINATE_JOBS = scaled(1000, 300)
BARE_ONE_JOBS = scaled(5000, 2000)
BARE_BATCH_JOBS = scaled(30000, 10000)
BATCH_SUBMIT_JOBS = scaled(50000, 20000)
LATENCY_SAMPLES = scaled(50, 20)
RSS_JOBS = scaled(500, 200)
RESCUE_ROUNDS = scaled(7, 5)  # kill -9 rescues timed with the default settings
# The no-op workflow with a webhook recipient for job.completed: every job then also
# writes its outbox row, as a job with a notify target does (workers run with
# --no-notifier, so the rows wait in the outbox as if the notifier were elsewhere).
NOOP_NOTIFYING = diagnostic_workflow("B-NOOP", {"action": "noop"},
                                     notify={"job.completed": ["http://127.0.0.1:9/hook"]})


def mediaq_throughput(env: MediaqEnv, processes: int) -> dict[str, Any]:
    """Idle workers (started and registered first), then NOOP_JOBS jobs in one INSERT:
    jobs/s from the INSERT until the database shows all of them completed."""
    start_fleet(env, processes)
    insert_jobs(env, NOOP_JOBS)
    seconds = drain(env, NOOP_JOBS)
    env.stop_workers()
    return {"jobs": NOOP_JOBS, "seconds": seconds, "jobs_per_s": NOOP_JOBS / seconds}


def bookkeeping(env: MediaqEnv) -> dict[str, Any]:
    """What the no-op jobs left behind, and each job's time outside its action: from
    claim (started_at) to completion, less the action's own seconds (step output_data)."""
    row = env.one("""
        WITH per_job AS (
            SELECT j.id,
                   extract(epoch FROM j.completed_at - j.started_at) * 1000
                   - sum((s.output_data ->> 'seconds')::float) * 1000 AS outside_ms
              FROM workflow_jobs j JOIN step_executions s ON s.job_id = j.id
             WHERE j.status = 'completed'
             GROUP BY j.id)
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY outside_ms) AS p50,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY outside_ms) AS p90,
               (SELECT count(*) FROM workflow_jobs) AS jobs,
               (SELECT count(*) FROM step_executions) AS step_executions,
               (SELECT count(*) FROM media_workflow_events) AS events,
               (SELECT count(*) FROM workflow_notifications) AS outbox
          FROM per_job""")
    return {k: float(v) if v is not None else None for k, v in row.items()}


def enqueue_to_start(env: MediaqEnv) -> dict[str, float]:
    """Plain INSERTs 50 ms apart on one session, as the NOTIFY floor does them (a new
    session's first INSERT compiles the trigger functions inside its transaction, after
    submitted_at is taken), with one idle worker listening; read back at the end (no
    polling while the worker works)."""
    start_fleet(env, 1)
    with env.connect() as conn:
        ids = []
        for _ in range(LATENCY_SAMPLES):
            ids.append(conn.execute("""INSERT INTO workflow_jobs (workflow_id, input_file_path)
                VALUES ((SELECT id FROM workflow_definitions WHERE workflow_code = 'B-NOOP'
                          AND is_current), %s) RETURNING id""",
                                    (str(env.inputs / "in.bin"),)).fetchone()["id"])
            time.sleep(0.05)
    drain(env, LATENCY_SAMPLES)
    env.stop_workers()
    latencies = [float(row["ms"]) for row in env.query(
        "SELECT extract(epoch FROM started_at - submitted_at) * 1000 AS ms"
        " FROM workflow_jobs WHERE id = ANY(%s)", (ids,))]
    return {"samples": len(latencies), "p50_ms": statistics.median(latencies),
            "max_ms": max(latencies)}


def batch_submission(env: MediaqEnv) -> dict[str, float]:
    path = env.inputs / "in.bin"
    with env.connect() as conn:
        conn.autocommit = False
        one_count = scaled(500, 200)
        started = time.perf_counter()
        for _ in range(one_count):
            submit(conn, "B-NOOP", path)
        conn.commit()
        one_by_one = one_count / (time.perf_counter() - started)
        paths = [path] * BATCH_SUBMIT_JOBS
        started = time.perf_counter()
        codes = submit_batch(conn, "B-NOOP", paths)
        conn.commit()
        batch = len(codes) / (time.perf_counter() - started)
    return {"one_by_one_jobs_per_s": one_by_one, "batch_jobs_per_s": batch,
            "batch_jobs": len(codes)}


def rss_over_jobs(env: MediaqEnv) -> dict[str, Any]:
    """One worker running one job at a time through RSS_JOBS consecutive jobs: its RSS
    once 10% of them are done (warm) against its RSS at the end."""
    (proc,) = start_fleet(env, 1, "--jobs", "1")
    insert_jobs(env, RSS_JOBS)
    samples: list[tuple[int, float]] = []

    def sample() -> None:
        samples.append((completed_count(env), rss_mb(proc.pid)))

    drain(env, RSS_JOBS, sample=sample)
    samples.append((RSS_JOBS, rss_mb(proc.pid)))
    env.stop_workers()
    warm = next(mb for done, mb in samples if done >= RSS_JOBS // 10)
    end = samples[-1][1]
    return {"jobs": RSS_JOBS, "rss_warm_mb": warm, "rss_end_mb": end,
            "rss_max_mb": max(mb for _, mb in samples), "growth": end / warm - 1}


def completed_count(env: MediaqEnv) -> int:
    return int(env.one("SELECT count(*) AS n FROM workflow_jobs"
                       " WHERE status = 'completed'")["n"])


def rescue_after_kill(env: MediaqEnv, rounds: int = 1, **settings: str) -> list[float]:
    """Seconds from ``kill -9`` of the worker running a job to another worker claiming
    it, ``rounds`` times; ``settings`` (e.g. ``lease_seconds="10"``) override the test
    environment's (a 3 s lease, 0.5 s polling)."""
    # Long enough that the victim is still running it when killed (the rescuer starts
    # and registers first); the rescuer is stopped as soon as it has claimed the job.
    env.apply_workflow(diagnostic_workflow("B-SLEEP", {"action": "sleep",
                                                       "parameters": {"seconds": 20}}))
    took = []
    for n in range(rounds):
        code = env.submit("B-SLEEP", env.inputs / "in.bin")
        victim = env.start_worker("--id", f"victim{n}", **settings)
        wait_for(lambda code=code: env.job(code)["status"] == "processing")
        env.start_worker("--id", f"rescuer{n}", **settings)
        wait_for(lambda n=n: env.one("SELECT count(*) AS n FROM workers WHERE worker_id = "
                                     "%s", (f"rescuer{n}",))["n"] == 1)
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda code=code, n=n: env.job(code)["worker_id"] == f"rescuer{n}",
                 timeout=60)
        took.append(time.monotonic() - killed)
        env.stop_workers()
    return took


DEFAULTS = {"lease_seconds": "10", "poll_seconds": "1"}  # as a new user runs it


def peers(admin: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    bare = [sys.executable, BENCH_DIR / "peers" / "bare.py"]
    figures["bare_one"] = run_json([*bare, create_database(admin, "bare"), "one",
                                    str(BARE_ONE_JOBS)])
    figures["bare_batch10"] = run_json([*bare, create_database(admin, "bare"), "batch",
                                        str(BARE_BATCH_JOBS)])
    figures["bare_notify"] = run_json([*bare, create_database(admin, "bare"), "notify",
                                       str(LATENCY_SAMPLES)])
    python = peers_python()
    if python is not None:
        figures["pgqueuer"] = run_json([python, BENCH_DIR / "peers" / "pgq.py",
                                        create_database(admin, "pgq"), str(PEER_JOBS)])
        figures["procrastinate"] = run_json([python, BENCH_DIR / "peers" / "procr.py",
                                             create_database(admin, "procr"),
                                             str(PROCRASTINATE_JOBS)])
    return figures


def rate(figure: dict[str, Any] | None) -> float | None:
    return float(figure["jobs_per_s"]) if figure else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def main() -> None:
    with server("core") as (admin, root):
        one = mediaq_throughput(env1 := fresh_env(admin, root, NOOP_NOTIFYING), 1)
        books = bookkeeping(env1)
        two = mediaq_throughput(fresh_env(admin, root, NOOP_NOTIFYING), 2)
        others = peers(admin)
        latency = enqueue_to_start(fresh_env(admin, root))
        batch = batch_submission(fresh_env(admin, root))
        rss = rss_over_jobs(fresh_env(admin, root, NOOP_NOTIFYING))
        rescue = rescue_after_kill(fresh_env(admin, root))[0]
        rescue_default = rescue_after_kill(fresh_env(admin, root), RESCUE_ROUNDS, **DEFAULTS)
    best = max(one["jobs_per_s"], two["jobs_per_s"])
    pgq, procr = rate(others.get("pgqueuer")), rate(others.get("procrastinate"))
    floor = others.get("bare_notify")
    lat_ratio = ratio(latency["p50_ms"], floor["p50_ms"] if floor else None)
    vs_pgq, vs_procr = ratio(best, pgq), ratio(best, procr)
    rows = [
        ["mediaq worker, 1 process (full bookkeeping)", NOOP_JOBS, one["jobs_per_s"],
         ratio(one["jobs_per_s"], pgq)],
        ["mediaq worker, 2 processes", NOOP_JOBS, two["jobs_per_s"],
         ratio(two["jobs_per_s"], pgq)],
        ["pgqueuer 1.6 (batch 10, drain)", PEER_JOBS, pgq, 1.0 if pgq else None],
        ["procrastinate 3 (concurrency 10, wait=False)", PROCRASTINATE_JOBS, procr,
         ratio(procr, pgq)],
        ["bare SKIP LOCKED, 1 per txn, 2 processes", BARE_ONE_JOBS,
         rate(others["bare_one"]), ratio(rate(others["bare_one"]), pgq)],
        ["bare SKIP LOCKED, batches of 10, 2 processes", BARE_BATCH_JOBS,
         rate(others["bare_batch10"]), ratio(rate(others["bare_batch10"]), pgq)],
    ]
    text = [table("Queue: no-op jobs/s (same server, same run)",
                  ["queue", "jobs", "jobs/s", "vs pgqueuer"], rows)]
    targets = [
        ["mediaq >= pgqueuer (jobs/s)", vs_pgq, ">= 1.00", verdict(vs_pgq and vs_pgq >= 1)],
        ["mediaq >= 5x procrastinate", vs_procr, ">= 5.00",
         verdict(vs_procr and vs_procr >= 5)],
        ["enqueue->start p50 / NOTIFY floor p50", lat_ratio, "<= 2.00",
         verdict(lat_ratio is not None and lat_ratio <= 2)],
        ["batch submission jobs/s", batch["batch_jobs_per_s"], ">= 20,000",
         verdict(batch["batch_jobs_per_s"] >= 20000)],
        ["time outside the action p50 (ms)", books["p50"], "< 20",
         verdict(books["p50"] is not None and books["p50"] < 20)],
        ["RSS growth over consecutive jobs", rss["growth"], "within +-0.10",
         verdict(abs(rss["growth"]) <= 0.10)],
        ["rescue after kill -9, default settings, p50 (s)", statistics.median(rescue_default),
         "<= 2.0", verdict(statistics.median(rescue_default) <= 2)],
    ]
    text.append(table("Queue: targets", ["figure", "value", "target", ""], targets))
    details = [
        ["mediaq enqueue->start p50 / max (ms)",
         f"{latency['p50_ms']:.1f} / {latency['max_ms']:.1f}"],
        ["bare LISTEN/NOTIFY enqueue->start p50 / max (ms)",
         f"{floor['p50_ms']:.1f} / {floor['max_ms']:.1f}" if floor else "-"],
        ["submit() one by one (jobs/s)", f"{batch['one_by_one_jobs_per_s']:,.0f}"],
        [f"submit_batch() of {batch['batch_jobs']:,} (jobs/s)",
         f"{batch['batch_jobs_per_s']:,.0f}"],
        ["time outside the action p50 / p90 (ms, 1 process run)",
         f"{books['p50']:.1f} / {books['p90']:.1f}"],
        ["rows per no-op job: step executions / events / outbox",
         f"{books['step_executions'] / books['jobs']:.1f} / "
         f"{books['events'] / books['jobs']:.1f} / {books['outbox'] / books['jobs']:.1f}"],
        [f"worker RSS after {RSS_JOBS // 10} / {RSS_JOBS} jobs (MB)",
         f"{rss['rss_warm_mb']:.0f} / {rss['rss_end_mb']:.0f} ({rss['growth']:+.1%})"],
        ["rescue after kill -9, 3 s lease (s)", f"{rescue:.1f} ({rescue / 3:.2f}x the lease)"],
        [f"rescue after kill -9, default settings, p50 / max of {RESCUE_ROUNDS} (s)",
         f"{statistics.median(rescue_default):.1f} / {max(rescue_default):.1f}"],
    ]
    text.append(table("Queue: details", ["figure", "value"], details))
    write_results("core", {
        "mediaq_1_process": one, "mediaq_2_processes": two, "peers": others,
        "bookkeeping": books, "enqueue_to_start": latency, "batch_submission": batch,
        "rss": rss, "rescue_seconds": rescue, "rescue_default_seconds": rescue_default,
        "ratios": {"vs_pgqueuer": vs_pgq, "vs_procrastinate": vs_procr,
                   "latency_vs_notify_floor": lat_ratio},
        "targets": {row[0]: row[3] for row in targets},
    }, "\n\n".join(text))


if __name__ == "__main__":
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    main()
