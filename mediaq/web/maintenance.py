"""Chores of every `mediaq web` process, once a minute: forget idle rate-limit buckets
and remove abandoned uploads with their bytes. Each is one DELETE … RETURNING, so two
processes doing it at once each remove what they deleted, never twice."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool

from mediaq import db, rate_limits, upload_files

log = structlog.get_logger("mediaq.web")


def run_once(pool: Any) -> dict[str, int]:
    with db.transaction(pool) as conn:
        buckets = rate_limits.forget_idle(conn)
    return {"buckets": buckets, "uploads": upload_files.expire(pool)}


async def loop(app: Any, interval: float) -> None:
    while True:
        try:
            done = await run_in_threadpool(run_once, app.state.pool)
            if done["uploads"]:
                log.info("web:uploads_expired", count=done["uploads"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database away for a moment: next round
            log.warning("web:maintenance_failed", error=str(exc)[:200])
        await asyncio.sleep(interval)
