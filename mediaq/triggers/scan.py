"""Scans: submitting one job for every file in a folder that has none yet.

The database side of the ``scan`` action (``submitted_by = scan:<job>``, through the
worker's ``ctx.submit_files``) and of ``mediaq scan PATH --workflow CODE``
(``scan:cli``); finding the files and batching them is in :mod:`mediaq.files`.
"""

from __future__ import annotations

from pathlib import Path

from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.submit import submit


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
