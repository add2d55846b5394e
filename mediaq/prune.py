"""Retention: delete finished jobs older than the retention, with everything that refers
to them, in short batches; optionally archive them first and remove their outputs.
Also the sweep of staging folders that no live job owns. Shared by `mediaq prune` and
the worker's pruner (mediaq/worker/maintenance/pruner.py)."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from mediaq import db, job_filter
from mediaq.errors import Refused
from mediaq.states import TERMINAL, JobStatus

BATCH = 1000
"""Jobs deleted per transaction: their row locks are held for one batch only."""
FINISHED: tuple[str, ...] = tuple(status.value for status in TERMINAL)
"""The statuses a job may be pruned in (failed ones are the dead letters)."""
STAGING_MIN_AGE = timedelta(hours=1)
_STAGING_NAME = re.compile(r"^(?P<code>.+)\.a\d+\.s\d+$")


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h`` or ``90m``, as in a filter's ``since`` (a bare number is days)."""
    if text.strip().isdigit():
        return timedelta(days=int(text))
    age = job_filter.parse_age(text)
    if age is None:
        raise Refused(f"--older-than {text!r}: give a number of days, hours or minutes "
                      "(30d, 12h, 90m)")
    return age


def statuses(keep_dead_letters: bool) -> list[str]:
    return [s for s in FINISHED if not (keep_dead_letters and s == JobStatus.FAILED)]


@dataclass
class PruneReport:
    cutoff: datetime | None = None
    dry_run: bool = False
    jobs: int = 0
    steps: int = 0
    events: int = 0
    notifications: int = 0
    batches: int = 0
    outputs_removed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        verb = "would prune" if self.dry_run else "pruned"
        text = (f"{verb} {self.jobs} jobs ({self.steps} step executions, {self.events} "
                f"events, {self.notifications} notifications)")
        if not self.dry_run:
            text += f" in {self.batches} batch{'es' if self.batches != 1 else ''}"
            if self.outputs_removed:
                text += f"; removed {self.outputs_removed} output folders"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff.isoformat() if self.cutoff else None,
                "dry_run": self.dry_run, "jobs": self.jobs, "steps": self.steps,
                "events": self.events, "notifications": self.notifications,
                "batches": self.batches, "outputs_removed": self.outputs_removed,
                "by_status": self.by_status}


def cutoff_for(conn: db.Connection, older_than: timedelta) -> datetime:
    row = db.fetch_one(conn, "prune_cutoff", {"older_than": older_than})
    assert row is not None
    cutoff: datetime = row["cutoff"]
    return cutoff


def preview(conn: db.Connection, older_than: timedelta, *,
            keep_dead_letters: bool = False) -> PruneReport:
    """What a prune would delete, counted; nothing is locked or changed."""
    cutoff = cutoff_for(conn, older_than)
    row = db.fetch_one(conn, "jobs_prune_preview",
                       {"statuses": statuses(keep_dead_letters), "cutoff": cutoff})
    assert row is not None
    return PruneReport(cutoff=cutoff, dry_run=True, jobs=row["jobs"], steps=row["steps"],
                       events=row["events"], notifications=row["notifications"],
                       by_status={s: row[s] for s in FINISHED if row[s]})


def prune(conn: db.Connection, older_than: timedelta, *, keep_dead_letters: bool = False,
          archive: TextIO | None = None, output_root: Path | None = None,
          batch: int = BATCH, on_batch: Callable[[PruneReport], None] | None = None,
          pause_seconds: float = 0.0) -> PruneReport:
    """Delete the finished jobs completed before now - ``older_than``, ``batch`` per
    transaction. ``conn`` must be in autocommit: each batch is its own transaction.

    With ``archive``, each job (with its step executions) is written as one JSON line
    before its batch commits (and flushed, so a line exists for every deleted job). With
    ``output_root``, each pruned job's folder <output_root>/<job_code> is removed once its
    batch has committed."""
    cutoff = cutoff_for(conn, older_than)
    report = PruneReport(cutoff=cutoff)
    params = {"statuses": statuses(keep_dead_letters), "cutoff": cutoff, "batch": batch}
    while True:
        with conn.transaction():
            locked = db.fetch_all(conn, "jobs_prune_lock_batch", params)
            if not locked:
                break
            ids = [row["id"] for row in locked]
            if archive is not None:
                for row in db.fetch_all(conn, "jobs_prune_archive_rows", {"ids": ids}):
                    archive.write(json.dumps(row["record"], default=str, ensure_ascii=False))
                    archive.write("\n")
                archive.flush()
            counts = db.fetch_one(conn, "jobs_prune_delete", {"ids": ids})
            assert counts is not None
        report.batches += 1
        report.jobs += counts["jobs"]
        report.steps += counts["steps"]
        report.events += counts["events"]
        report.notifications += counts["notifications"]
        if output_root is not None:
            report.outputs_removed += remove_outputs(output_root,
                                                     [row["job_code"] for row in locked])
        if on_batch is not None:
            on_batch(report)
        if len(locked) < batch:
            break
        if pause_seconds:
            time.sleep(pause_seconds)  # let other sessions in between batches
    return report


def remove_outputs(output_root: Path, job_codes: list[str]) -> int:
    """Remove <output_root>/<code> for each code; never anything outside the output root,
    the root itself, a hidden folder (.staging) or a symlink's target."""
    root = output_root.resolve()
    removed = 0
    for code in job_codes:
        if not code or code.startswith(".") or "/" in code or "\\" in code or "\x00" in code:
            continue
        folder = output_root / code
        if folder.is_symlink() or not folder.is_dir():
            continue
        resolved = folder.resolve()
        if resolved.parent != root:
            continue
        shutil.rmtree(resolved, ignore_errors=True)
        removed += 1
    return removed


def sweep_staging(conn: db.Connection, staging_root: Path,
                  min_age: timedelta = STAGING_MIN_AGE, now: float | None = None) -> list[Path]:
    """Remove staging folders (<code>.a<attempt>.s<step>) untouched for ``min_age`` whose
    job is finished or gone; a live job's (pending, queued, processing, paused) stay."""
    if not staging_root.is_dir():
        return []
    limit = (now if now is not None else time.time()) - min_age.total_seconds()
    old: dict[str, list[Path]] = {}
    for entry in staging_root.iterdir():
        match = _STAGING_NAME.match(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            if entry.stat().st_mtime > limit:
                continue
        except FileNotFoundError:
            continue
        old.setdefault(match["code"], []).append(entry)
    if not old:
        return []
    live = {row["job_code"] for row in db.fetch_all(conn, "staging_jobs_live",
                                                    {"codes": sorted(old)})}
    removed = []
    for code, folders in old.items():
        if code in live:
            continue
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
