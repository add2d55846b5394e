"""procrastinate: N no-op jobs deferred in one batch, run by one worker (concurrency 10)
that stops when the queue is empty (``wait=False``).

Run with the peers environment's Python: ``procr.py DSN N``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import procrastinate

done = 0


async def main(dsn: str, count: int) -> None:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop() -> None:
        global done
        done += 1

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        await noop.batch_defer_async(*({} for _ in range(count)))
        started = time.perf_counter()
        await app.run_worker_async(concurrency=10, wait=False, install_signal_handlers=False)
        elapsed = time.perf_counter() - started
    print(json.dumps({"jobs": done, "seconds": elapsed, "jobs_per_s": done / elapsed}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
