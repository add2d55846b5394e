"""Scans: one job for every file in a folder that has none yet.

Used by the ``scan`` action (a step whose job's input is a folder; its jobs have
``submitted_by = scan:<job>``) and by ``mediaq scan PATH --workflow CODE`` (``scan:cli``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.submit import submit

BATCH = 200  # files per transaction: progress moves, and a failure loses little


@dataclass
class ScanSummary:
    directory: str
    found: int = 0
    submitted: int = 0
    skipped_existing: int = 0
    job_codes: list[str] = field(default_factory=list)

    def as_data(self, *, codes_shown: int = 100) -> dict[str, Any]:
        return {"directory": self.directory, "found": self.found, "submitted": self.submitted,
                "skipped_existing": self.skipped_existing,
                "job_codes": self.job_codes[:codes_shown]}


def submit_files(conn: db.Connection, workflow_code: str, paths: list[Path], *,
                 submitted_by: str, skip_existing: bool, priority: int | None = None,
                 idempotency_prefix: str | None = None) -> list[str | None]:
    """One job per path on ``conn`` (not committed); None where a job already existed.

    With ``idempotency_prefix`` a path submitted before under the same prefix returns
    its first job again, so a scan that is retried submits nothing twice.
    """
    texts = [str(path) for path in paths]
    existing: set[str] = set()
    if skip_existing and texts:
        rows = db.fetch_all(conn, "scan_existing_inputs",
                            {"workflow_code": workflow_code, "paths": texts})
        existing = {row["input_file_path"] for row in rows}
    codes: list[str | None] = []
    for text in texts:
        if text in existing:
            codes.append(None)
            continue
        key = f"{idempotency_prefix}:{text}" if idempotency_prefix else None
        job = submit(conn, workflow_code, text, priority=priority, idempotency_key=key,
                     submitted_by=submitted_by)
        codes.append(job["job_code"])
    return codes


def submit_found_files(pool: ConnectionPool[db.Connection], workflow_code: str,
                       paths: list[Path], *, found_by: str, skip_existing: bool,
                       priority: int | None) -> list[str | None]:
    """:func:`submit_files` in a transaction of its own (what a scan step calls)."""
    with db.transaction(pool) as conn:
        return submit_files(conn, workflow_code, paths, submitted_by=found_by,
                            skip_existing=skip_existing, priority=priority,
                            idempotency_prefix=found_by)


def submit_in_batches(files: list[Path], summary: ScanSummary,
                      submit_batch: Callable[[list[Path]], list[str | None]],
                      on_batch: Callable[[int], None] | None = None) -> ScanSummary:
    """Feed ``files`` to ``submit_batch`` BATCH at a time, counting what happened."""
    summary.found = len(files)
    for start in range(0, len(files), BATCH):
        codes = submit_batch(files[start:start + BATCH])
        new = [code for code in codes if code is not None]
        summary.job_codes.extend(new)
        summary.submitted += len(new)
        summary.skipped_existing += len(codes) - len(new)
        if on_batch is not None:
            on_batch(start + len(codes))
    return summary
