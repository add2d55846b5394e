"""The floor: a bare SKIP LOCKED queue in plain psycopg, no bookkeeping at all.

``bare.py DSN one N``    N jobs, 2 worker processes claiming 1 job per transaction
``bare.py DSN batch N``  N jobs, 2 worker processes claiming 10 jobs per transaction
``bare.py DSN notify K`` K single jobs, each INSERT + NOTIFY in one transaction, to an
                         idle listener that claims on the notification; the median
                         enqueue-to-start latency (row's inserted_at to its started_at)

Prints one JSON object on its last line.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import sys
import time

import psycopg

SCHEMA = """
DROP TABLE IF EXISTS bare_jobs;
CREATE TABLE bare_jobs (
    id          bigserial PRIMARY KEY,
    status      text NOT NULL DEFAULT 'queued',
    payload     jsonb NOT NULL DEFAULT '{}',
    inserted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at  timestamptz
);
CREATE INDEX bare_jobs_queued ON bare_jobs (id) WHERE status = 'queued';
"""

CLAIM = """
UPDATE bare_jobs SET status = 'done', started_at = clock_timestamp()
 WHERE id IN (SELECT id FROM bare_jobs WHERE status = 'queued' ORDER BY id
               LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id
"""


def work(dsn: str, batch: int) -> None:
    with psycopg.connect(dsn) as conn:
        while True:
            with conn.transaction():
                if not conn.execute(CLAIM, (batch,)).fetchall():
                    return


def throughput(dsn: str, count: int, batch: int, workers: int = 2) -> dict[str, float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO bare_jobs (payload) SELECT '{}' FROM generate_series(1, %s)",
                     (count,))
        conn.execute("VACUUM ANALYZE bare_jobs")
    procs = [multiprocessing.Process(target=work, args=(dsn, batch)) for _ in range(workers)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - started
    return {"jobs": count, "seconds": elapsed, "jobs_per_s": count / elapsed}


def listener(dsn: str, ready: multiprocessing.synchronize.Event) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("LISTEN bare_jobs")
        ready.set()
        while True:
            # stop_after=1: the generator gives the connection back after each wake-up
            payloads = [n.payload for n in conn.notifies(timeout=30, stop_after=1)]
            if not payloads or "stop" in payloads:
                return
            with conn.transaction():
                conn.execute(CLAIM, (1,))


def notify_latency(dsn: str, samples: int) -> dict[str, float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=listener, args=(dsn, ready))
    proc.start()
    ready.wait(30)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(samples):
            with conn.transaction():
                conn.execute("INSERT INTO bare_jobs DEFAULT VALUES")
                conn.execute("NOTIFY bare_jobs")
            time.sleep(0.05)
        time.sleep(0.5)
        conn.execute("NOTIFY bare_jobs, 'stop'")
        rows = conn.execute("SELECT extract(epoch FROM started_at - inserted_at) * 1000"
                            " FROM bare_jobs WHERE started_at IS NOT NULL").fetchall()
    proc.join(30)
    latencies = [float(r[0]) for r in rows]
    return {"samples": len(latencies), "p50_ms": statistics.median(latencies),
            "max_ms": max(latencies)}


if __name__ == "__main__":
    dsn, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    result = {"one": lambda: throughput(dsn, n, 1), "batch": lambda: throughput(dsn, n, 10),
              "notify": lambda: notify_latency(dsn, n)}[mode]()
    print(json.dumps(result))
