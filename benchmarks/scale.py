"""Scale figures, measured in one run (read the ratios):

- claim latency and no-op throughput with 1,000,000 queued jobs vs 10,000, and the
  claim query's plan at 1,000,000 (an index scan, never a sequential scan)
- no-op throughput with 1 to 50 ``mediaq worker --jobs 1`` processes, the PostgreSQL
  sessions they hold at peak, and where the CPU goes (PostgreSQL vs the workers)
- CPU-bound image jobs (4000x3000 JPEG -> 300 px thumbnail) with 1, 2 and 4 worker
  processes of one job each: where the cores set the ceiling
- what idle worker processes cost PostgreSQL (50, quick: 20, for 30 s, default
  settings): its CPU as a share of one core, WAL, commits, sessions per process

Run: make bench (BENCH_QUICK=1: 200,000 instead of 1,000,000 queued, fewer processes).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import (
    completed,
    drain,
    fresh_env,
    insert_jobs,
    pg_connections,
    scaled,
    server,
    start_fleet,
    table,
    verdict,
    write_results,
)
from benchmarks.images import make_sources
from mediaq import db
from mediaq.queries import queries
from mediaq.worker.claimer import Claimer
from mediaq.worker.resources import Capacity
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for

BIG_BACKLOG = scaled(1_000_000, 200_000)
SMALL_BACKLOG = 10_000
CLAIMS = scaled(300, 150)
WINDOW_S = scaled(6, 3)
ROUNDS = 3  # alternating rounds of the two backlogs
FLEET = (1, 2, 4, 8, 16, 32, 50) if not scaled(0, 1) else (1, 2, 4, 8, 16)
FLEET_JOBS = scaled(800, 400)
IMAGES = scaled(24, 12)
IMAGE_WORKERS = (1, 2, 4)
IDLE_PROCESSES = scaled(50, 20)
IDLE_SECONDS = scaled(30, 20)
IDLE_SETTLE_S = 5.0


# ------------------------------------------------------------------ 10k vs 1M queued


INPUTS = 1000  # distinct input files the backlog cycles through


def fill_backlog(env: MediaqEnv, count: int) -> None:
    """``count`` pending no-op jobs, written in one statement with the engine's row
    triggers off (the rows carry what those triggers would have filled in), so that a
    million-job backlog takes a minute, not ten. The jobs cycle through INPUTS files:
    with one path for all, every row lands in one bucket of the hash index on
    input_file_path, whose overflow chain makes each insert slower than the last."""
    for index in range(INPUTS):
        env.input_file(f"in_{index}.bin")
    with env.connect() as conn, conn.transaction():
        conn.execute("ALTER TABLE workflow_jobs DISABLE TRIGGER USER")
        conn.execute("""
            INSERT INTO workflow_jobs (workflow_id, input_file_path, job_code, priority,
                                       resource_category, vram_required, max_retries,
                                       queue_name, submitted_by, status)
            SELECT wd.id, %s || (n %% %s) || '.bin', 'BK-' || n, 5, 'cpu', 0, 3,
                   coalesce(wd.queue_name, wd.workflow_type, 'default'), 'bench', 'pending'
              FROM workflow_definitions wd, generate_series(1, %s) AS n
             WHERE wd.workflow_code = 'B-NOOP' AND wd.is_current""",
                     (str(env.inputs / "in_"), INPUTS, count))
        conn.execute("ALTER TABLE workflow_jobs ENABLE TRIGGER USER")
        # Their tasks, as the insert trigger would have made them (issue 18).
        conn.execute("SELECT job_tasks_create(ARRAY(SELECT id FROM workflow_jobs"
                     " WHERE job_code LIKE 'BK-%%'))")
    with env.connect() as conn:
        conn.execute("VACUUM ANALYZE workflow_jobs")
        conn.execute("VACUUM ANALYZE job_tasks")


def claim_latency(env: MediaqEnv, claims: int, worker_id: str) -> list[float]:
    """``claims`` claims one after another through the engine's own Claimer (the slots
    stay taken: the host has CLAIMS + 1 of them); milliseconds each."""
    pool = db.make_pool(env.url, 2)
    try:
        capacity = Capacity(categories=("cpu",), limits={"cpu": CLAIMS + 1},
                            vram_budget_mb=0, gpu=None, process_jobs=None)
        claimer = Claimer(pool, worker_id=worker_id, host="bench-host",
                          capacity=capacity, queues=None, lease_seconds=600)
        claimer.register("bench")
        times = []
        for _ in range(claims):
            started = time.perf_counter()
            assert claimer.claim("cpu") is not None
            times.append((time.perf_counter() - started) * 1000)
    finally:
        pool.close()
    return times


def claim_plan(env: MediaqEnv) -> dict[str, Any]:
    params = {"host": "bench-host", "category": "cpu", "gpu": False, "limit": CLAIMS + 1,
              "vram_free_mb": 2**31 - 1, "queues": None, "worker_id": "w",
              "lease_seconds": 10, "log_line": "x", "prefer_job_id": None,
              "only_preferred": False}
    with env.connect() as conn:
        conn.execute("SET search_path = mediaq, public")
        conn.execute("BEGIN")
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + queries["task_claim_next"],
                            params).fetchone()
        conn.execute("ROLLBACK")
    text = json.dumps(plan)
    return {"uses_claimable_index": "job_tasks_ready" in text,
            "seq_scan_on_jobs": '"Relation Name": "workflow_jobs", "Node Type": "Seq Scan"'
                                in text
                                or '"Relation Name": "job_tasks", "Node Type": "Seq Scan"'
                                in text}


def windowed_throughput(env: MediaqEnv) -> float:
    """One worker process on a standing backlog: jobs completed per second over WINDOW_S."""
    start_fleet(env, 1)
    before, started = completed(env), time.monotonic()
    time.sleep(WINDOW_S)
    rate = (completed(env) - before) / (time.monotonic() - started)
    env.stop_workers()
    return rate


def backlogs(admin: str, root: Path) -> list[dict[str, Any]]:
    """Both backlogs built first, then measured in alternating rounds (small, big, small,
    big...), so that other work on the machine weighs on both alike."""
    envs, rows = [], []
    for count in (SMALL_BACKLOG, BIG_BACKLOG):
        env = fresh_env(admin, root)
        started = time.monotonic()
        fill_backlog(env, count)
        envs.append(env)
        rows.append({"queued": count, "fill_s": time.monotonic() - started,
                     "plan": claim_plan(env), "claims_ms": [], "rates": []})
    for round_ in range(ROUNDS):
        for env, row in zip(envs, rows, strict=True):
            row["claims_ms"] += claim_latency(env, CLAIMS // ROUNDS, f"bench-claimer-{round_}")
    for _ in range(ROUNDS):
        for env, row in zip(envs, rows, strict=True):
            row["rates"].append(windowed_throughput(env))
    for row in rows:
        times = sorted(row.pop("claims_ms"))
        row.update(p50_ms=statistics.median(times), p90_ms=times[int(len(times) * 0.9)],
                   jobs_per_s=statistics.median(row["rates"]))
    return rows


# ------------------------------------------------------------------ 1 to 50 processes


class CpuMeter:
    """CPU seconds of the bench's own PostgreSQL server (postmaster and its backends)
    and of the worker processes, between two readings."""

    def __init__(self, postmaster_pid: int | None, workers: list[int]) -> None:
        self.postmaster_pid, self.workers = postmaster_pid, workers

    def _cpu(self, pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    def _postgres(self) -> list[int]:
        if self.postmaster_pid is None:
            return []
        try:
            master = psutil.Process(self.postmaster_pid)
            return [self.postmaster_pid, *(c.pid for c in master.children())]
        except psutil.Error:
            return []

    def read(self) -> tuple[float, float]:
        return self._cpu(self._postgres()), self._cpu(self.workers)


def postmaster_pid(root: Path) -> int | None:
    pidfile = root / "pg" / "pgdata" / "postmaster.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.exists() else None


def fleet_scaling(admin: str, root: Path) -> list[dict[str, Any]]:
    """Grow one fleet of ``--jobs 1`` workers through FLEET; at each size, FLEET_JOBS
    no-op jobs in one INSERT, timed until all completed."""
    env = fresh_env(admin, root)
    procs: list[Any] = []
    rows = []
    for size in FLEET:
        procs += start_fleet(env, size - len(procs), "--jobs", "1")
        meter = CpuMeter(postmaster_pid(root), [p.pid for p in procs])
        peak = [pg_connections(env)]
        idle_connections = peak[0]
        cpu_before = meter.read()
        done_before = completed(env)
        insert_jobs(env, FLEET_JOBS)
        seconds = drain(env, done_before + FLEET_JOBS,
                        sample=lambda peak=peak: peak.append(pg_connections(env)))
        pg_cpu, worker_cpu = (after - before for after, before
                              in zip(meter.read(), cpu_before, strict=True))
        rows.append({"processes": size, "jobs_per_s": FLEET_JOBS / seconds,
                     "connections_idle": idle_connections, "connections_peak": max(peak),
                     "per_process_peak": max(peak) / size,
                     "postgres_cpu_s": pg_cpu, "workers_cpu_s": worker_cpu,
                     "cpu_per_wall": (pg_cpu + worker_cpu) / seconds,
                     "postgres_cpu_share": pg_cpu / max(1e-9, pg_cpu + worker_cpu)})
    env.stop_workers()
    return rows


# ------------------------------------------------------------------ idle fleet


def idle_cost(admin: str, root: Path, processes: int = IDLE_PROCESSES,
              seconds: float = IDLE_SECONDS, pythonpath: str | None = None) -> dict[str, Any]:
    """``processes`` idle ``mediaq worker --jobs 1`` processes (default settings: lease,
    poll, notifier and triggers on) on an empty queue for ``seconds``: the PostgreSQL
    server's CPU (postmaster and every backend, from /proc), its WAL and commits, and the
    sessions the processes hold. ``pythonpath``: run the workers from another checkout
    (a before/after comparison in one run)."""
    env = fresh_env(admin, root)
    for name in ("MEDIAQ_LEASE_SECONDS", "MEDIAQ_POLL_SECONDS"):
        env.env.pop(name, None)
    if pythonpath:
        env.env["PYTHONPATH"] = pythonpath
    procs = [env.start_worker("--jobs", "1") for _ in range(processes)]
    try:
        wait_for(lambda: env.one("SELECT count(*) AS n FROM workers"
                                 " WHERE status <> 'stopped'")["n"] >= processes,
                 timeout=60 + 3 * processes, message=f"{processes} idle workers up")
        time.sleep(IDLE_SETTLE_S)  # start-up (registration, first checks) behind them
        meter = CpuMeter(postmaster_pid(root), [p.pid for p in procs])
        stats_sql = ("SELECT pg_current_wal_lsn() AS lsn, xact_commit AS commits"
                     " FROM pg_stat_database WHERE datname = current_database()")
        first, cpu_before, started = env.one(stats_sql), meter.read(), time.monotonic()
        sessions = [pg_connections(env)]
        while time.monotonic() - started < seconds:
            time.sleep(1.0)
            sessions.append(pg_connections(env))
        cpu_after, wall = meter.read(), time.monotonic() - started
        with env.connect() as conn:
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn) AS wal,"
                " (SELECT xact_commit FROM pg_stat_database"
                "   WHERE datname = current_database()) AS commits",
                (str(first["lsn"]),)).fetchone()
            assert row is not None
            last = {"wal": float(row["wal"]), "commits": int(row["commits"])}
    finally:
        env.stop_workers()
    pg_cpu = cpu_after[0] - cpu_before[0]
    return {"processes": processes, "seconds": wall,
            "postgres_core_share": pg_cpu / wall,
            "workers_core_share": (cpu_after[1] - cpu_before[1]) / wall,
            "wal_bytes_per_s": last["wal"] / wall,
            "commits_per_s": (last["commits"] - int(first["commits"])) / wall,
            "sessions_per_process": max(sessions) / processes}


# ------------------------------------------------------------------ CPU-bound image jobs


def image_scaling(admin: str, root: Path) -> list[dict[str, Any]]:
    env = fresh_env(admin, root, diagnostic_workflow(
        "B-THUMB", {"action": "create_thumbnail", "parameters": {"size": 300, "mode": "fit"}}))
    sources = make_sources(env.inputs / "photos", IMAGES)
    procs: list[Any] = []
    rows = []
    for size in IMAGE_WORKERS:
        procs += start_fleet(env, size - len(procs), "--jobs", "1")
        meter = CpuMeter(postmaster_pid(root), [p.pid for p in procs])
        cpu_before = meter.read()
        done_before = completed(env)
        insert_jobs(env, IMAGES, "B-THUMB", sources)
        seconds = drain(env, done_before + IMAGES)
        pg_cpu, worker_cpu = (after - before for after, before
                              in zip(meter.read(), cpu_before, strict=True))
        failed = env.one("SELECT count(*) AS n FROM workflow_jobs WHERE status = 'failed'")["n"]
        rows.append({"processes": size, "images_per_s": IMAGES / seconds,
                     "workers_cpu_per_wall": worker_cpu / seconds,
                     "postgres_cpu_s": pg_cpu, "failed": failed})
    env.stop_workers()
    base = rows[0]["images_per_s"]
    for row in rows:
        row["speedup"] = row["images_per_s"] / base
    return rows


def main() -> None:
    with server("scale", max_connections=400) as (admin, root):
        small, big = backlogs(admin, root)
        fleet = fleet_scaling(admin, root)
        images = image_scaling(admin, root)
        idle = idle_cost(admin, root)
    lat = big["p50_ms"] / small["p50_ms"]
    thr = small["jobs_per_s"] / big["jobs_per_s"]
    plan_ok = big["plan"]["uses_claimable_index"] and not big["plan"]["seq_scan_on_jobs"]
    text = [table(f"Scale: {BIG_BACKLOG:,} vs {SMALL_BACKLOG:,} queued jobs", [
        "queued", "build s", "claim p50 ms", "claim p90 ms", "jobs/s (1 worker)",
        "claim plan"], [
        [f"{row['queued']:,}", row["fill_s"], row["p50_ms"], row["p90_ms"], row["jobs_per_s"],
         "index scan" if row["plan"]["uses_claimable_index"]
         and not row["plan"]["seq_scan_on_jobs"] else "SEQ SCAN"] for row in (small, big)]),
        table("Scale: targets", ["figure", "value", "target", ""], [
            ["claim p50, big / small backlog", lat, "<= 1.20", verdict(lat <= 1.2)],
            ["jobs/s, small / big backlog", thr, "<= 1.20", verdict(thr <= 1.2)],
            ["claim plan at the big backlog", "index scan" if plan_ok else "seq scan",
             "index scan", verdict(plan_ok)]]),
        table(f"Scale: no-op jobs/s by worker processes (--jobs 1 each, {FLEET_JOBS} jobs "
              "per row)", ["processes", "jobs/s", "vs 1", "PG sessions idle/peak",
                           "per process", "CPU/wall", "postgres CPU share"],
              [[r["processes"], r["jobs_per_s"], r["jobs_per_s"] / fleet[0]["jobs_per_s"],
                f"{r['connections_idle']}/{r['connections_peak']}", r["per_process_peak"],
                r["cpu_per_wall"], f"{r['postgres_cpu_share']:.0%}"] for r in fleet]),
        table(f"Scale: {idle['processes']} idle worker processes (default settings) for "
              f"{idle['seconds']:.0f} s", ["figure", "value", "target", ""], [
            ["PostgreSQL CPU, % of one core", 100 * idle["postgres_core_share"],
             f"<= {2 * idle['processes'] / 50:.1f} (2 % at 50)",
             verdict(idle["postgres_core_share"] <= 0.02 * idle["processes"] / 50)],
            ["sessions per process", idle["sessions_per_process"], "<= 1.5",
             verdict(idle["sessions_per_process"] <= 1.5)],
            ["WAL bytes/s", idle["wal_bytes_per_s"], "", ""],
            ["commits/s", idle["commits_per_s"], "", ""]]),
        table(f"Scale: CPU-bound image jobs ({IMAGES} x 4000x3000 JPEG -> 300 px, "
              "--jobs 1 per process)", ["processes", "images/s", "speedup",
                                        "workers CPU/wall", "failed"],
              [[r["processes"], r["images_per_s"], r["speedup"], r["workers_cpu_per_wall"],
                r["failed"]] for r in images]),
    ]
    write_results("scale", {"small_backlog": small, "big_backlog": big, "fleet": fleet,
                            "images": images, "idle": idle,
                            "ratios": {"claim_p50_big_over_small": lat,
                                       "jobs_per_s_small_over_big": thr}},
                  "\n\n".join(text))


if __name__ == "__main__":
    main()
