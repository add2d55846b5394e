"""Retention: delete finished jobs older than the retention, with everything that refers
to them, in short batches; optionally archive them first and remove their outputs (a
local folder, or the objects under an ``s3://`` output root's <root>/<job_code>/).
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
from mediaq.storage import s3 as s3ops
from mediaq.storage.uri import S3Uri

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
          archive: TextIO | None = None, output_root: Path | ObjectOutputs | None = None,
          batch: int = BATCH, on_batch: Callable[[PruneReport], None] | None = None,
          pause_seconds: float = 0.0) -> PruneReport:
    """Delete the finished jobs completed before now - ``older_than``, ``batch`` per
    transaction. ``conn`` must be in autocommit: each batch is its own transaction.

    With ``archive``, each job (with its step executions) is written as one JSON line
    before its batch commits (and flushed, so a line exists for every deleted job). With
    ``output_root``, each pruned job's folder <output_root>/<job_code> is removed once its
    batch has committed; in object storage (:class:`ObjectOutputs`), its objects are
    deleted just before the batch commits, so a store that refuses leaves the batch's
    jobs in place (to be pruned again) rather than their objects behind unlisted."""
    cutoff = cutoff_for(conn, older_than)
    if isinstance(output_root, ObjectOutputs):
        output_root.check()  # a denied or missing bucket: one line, before any delete
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
            if isinstance(output_root, ObjectOutputs):
                report.outputs_removed += output_root.remove([row["job_code"]
                                                              for row in locked])
        report.batches += 1
        report.jobs += counts["jobs"]
        report.steps += counts["steps"]
        report.events += counts["events"]
        report.notifications += counts["notifications"]
        if isinstance(output_root, Path):
            report.outputs_removed += remove_outputs(output_root,
                                                     [row["job_code"] for row in locked])
        if on_batch is not None:
            on_batch(report)
        if len(locked) < batch:
            break
        if pause_seconds:
            time.sleep(pause_seconds)  # let other sessions in between batches
    return report


def prunable_codes(conn: db.Connection, older_than: timedelta, *,
                   keep_dead_letters: bool = False) -> list[str]:
    """The codes of the jobs a prune would remove now (nothing is locked)."""
    cutoff = cutoff_for(conn, older_than)
    rows = db.fetch_all(conn, "jobs_prune_codes",
                        {"statuses": statuses(keep_dead_letters), "cutoff": cutoff})
    return [row["job_code"] for row in rows]


def _safe_code(code: str) -> bool:
    """A job code that names one folder directly under the root (never the root, a hidden
    folder such as .staging, or a path)."""
    return bool(code) and not code.startswith(".") and not any(c in code for c in "/\\\x00")


@dataclass
class ObjectOutputs:
    """An ``s3://`` output root as a prune sees it: each job's objects are those whose
    key starts with <root>/<job_code>/ (the trailing "/" keeps J1 from matching J10),
    listed page by page and deleted 1,000 keys per DeleteObjects request."""

    root: S3Uri
    s3: Any

    @classmethod
    def open(cls, root: str, settings: s3ops.ClientSettings) -> ObjectOutputs:
        return cls(S3Uri.parse(root, prefix=True), s3ops.client(settings))

    def check(self) -> None:
        """One listing of the root: a refusal is a one-line error before anything goes."""
        next(iter(s3ops.list_objects(self.s3, self.root, recursive=False)), None)

    def folder(self, code: str) -> S3Uri:
        return S3Uri(self.root.bucket, f"{self.root.key}{code}/")

    def keys(self, codes: list[str]) -> dict[str, list[str]]:
        """Each code's object keys (codes without objects are left out)."""
        found: dict[str, list[str]] = {}
        for code in codes:
            if not _safe_code(code):
                continue
            folder = self.folder(code)
            keys = [o.key for o in s3ops.list_objects(self.s3, folder)
                    if o.key.startswith(folder.key)]
            if keys:
                found[code] = keys
        return found

    def remove(self, codes: list[str]) -> int:
        """Delete the objects of these jobs' folders; how many folders had any."""
        found = self.keys(codes)
        s3ops.delete_keys(self.s3, self.root.bucket,
                          [key for keys in found.values() for key in keys])
        return len(found)

    def listing(self, codes: list[str]) -> list[str]:
        """What :meth:`remove` would delete, as s3:// locations."""
        return [f"s3://{self.root.bucket}/{key}"
                for keys in self.keys(codes).values() for key in keys]


def would_remove(output_root: Path | ObjectOutputs, codes: list[str]) -> list[str]:
    """The output folders (local) or objects (s3://) a prune of ``codes`` would remove."""
    if isinstance(output_root, ObjectOutputs):
        output_root.check()
        return output_root.listing(codes)
    root = output_root.resolve()
    return [str(root / code) for code in codes if _safe_code(code)
            and (output_root / code).is_dir() and not (output_root / code).is_symlink()
            and (output_root / code).resolve().parent == root]


def remove_outputs(output_root: Path, job_codes: list[str]) -> int:
    """Remove <output_root>/<code> for each code; never anything outside the output root,
    the root itself, a hidden folder (.staging) or a symlink's target."""
    root = output_root.resolve()
    removed = 0
    for code in job_codes:
        if not _safe_code(code):
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
