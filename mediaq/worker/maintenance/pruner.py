"""Retention in the worker: prune finished jobs past ``retention_days`` and sweep orphaned
staging folders, at most once an hour for the whole deployment (however many workers)."""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from pathlib import Path

import structlog

from mediaq import db, prune

log = structlog.get_logger("mediaq.pruner")

EVERY_SECONDS = 3600
"""The least time between two prune passes of a deployment."""
CHECK_SECONDS = 300.0
"""How often a worker asks whether a pass is due (jittered)."""
LOCK_KEY = 0x6D65_6471_7072  # "medqpr": the deployment's pruning advisory lock
PAUSE_SECONDS = 0.05
"""Pause between batches, so a long backlog never keeps claims and the API waiting."""


def prune_pass(conn: db.Connection, retention_days: int, staging: Path,
               every_seconds: int = EVERY_SECONDS) -> prune.PruneReport | None:
    """One pass on ``conn`` (autocommit) if it is this worker's turn: None when another
    worker pruned less than ``every_seconds`` ago or is pruning now. The worker never
    removes outputs; it sweeps orphaned staging folders under ``staging``."""
    with conn.transaction():
        row = db.fetch_one(conn, "prune_try_lock", {"key": LOCK_KEY})
    if not (row and row["locked"]):
        return None
    try:
        with conn.transaction():
            turn = db.fetch_one(conn, "prune_take_turn", {"every_seconds": every_seconds})
        if turn is None:
            return None
        report = prune.PruneReport()
        if retention_days > 0:
            report = prune.prune(conn, timedelta(days=retention_days),
                                 pause_seconds=PAUSE_SECONDS)
        with conn.transaction():
            swept = prune.sweep_staging(conn, staging)
    finally:
        with conn.transaction():
            db.fetch_one(conn, "prune_unlock", {"key": LOCK_KEY})
    if report.jobs or swept:
        log.info("prune:done", jobs=report.jobs, steps=report.steps, events=report.events,
                 batches=report.batches, staging_swept=len(swept))
    return report


class Pruner(threading.Thread):
    """Its own short-lived session per look (not one of the worker pool's few: a pass may
    take a while, and the heartbeat must never wait for a connection)."""

    def __init__(self, url: str, retention_days: int, staging: Path) -> None:
        super().__init__(name="mediaq-pruner", daemon=True)
        self.url = url
        self.retention_days = retention_days
        self.staging = staging
        self.halt = threading.Event()

    def run(self) -> None:
        # The first look comes a few minutes in: a fleet starting together spreads out.
        while not self.halt.wait(random.uniform(0.5 * CHECK_SECONDS, 1.5 * CHECK_SECONDS)):
            try:
                with db.connect(self.url, autocommit=True, application="mediaq-pruner") as conn:
                    prune_pass(conn, self.retention_days, self.staging)
            except Exception as exc:
                log.warning("pruner:error", error=str(exc))
