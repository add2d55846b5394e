"""pgqueuer: N no-op jobs enqueued in one call, drained by one QueueManager (batch 10).

Run with the peers environment's Python: ``pgq.py DSN N``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import psycopg
from pgqueuer import types
from pgqueuer.db import PsycopgDriver
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries


async def main(dsn: str, count: int) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        queries = Queries(PsycopgDriver(conn))
        await queries.install()
        await queries.enqueue(["noop"] * count, [None] * count, [0] * count)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        manager = QueueManager(Queries(PsycopgDriver(conn)))
        done = 0

        @manager.entrypoint("noop")
        async def noop(job: object) -> None:
            nonlocal done
            done += 1

        started = time.perf_counter()
        await manager.run(batch_size=10, mode=types.QueueExecutionMode.drain)
        elapsed = time.perf_counter() - started
    print(json.dumps({"jobs": done, "seconds": elapsed, "jobs_per_s": done / elapsed}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
