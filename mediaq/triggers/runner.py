"""The triggers loop: list watch folders, submit settled files, fire due schedules.

Runs inside every ``mediaq worker`` (unless disabled) or alone as ``mediaq
triggers``; any number may run against one database (see folders.py and
schedules.py for why nothing is submitted twice).
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import psycopg
import structlog

from mediaq import db
from mediaq.config import Settings
from mediaq.errors import PermanentError, TransientError
from mediaq.files import walk_files
from mediaq.storage import s3 as s3ops
from mediaq.storage.setup import client_settings
from mediaq.triggers.folders import FolderEvents, WatchFolder
from mediaq.triggers.objects import SettleTracker, list_watched
from mediaq.triggers.schedules import fire_due

log = structlog.get_logger("mediaq.triggers")

# After the last event in a folder, look again once its files can have settled.
SETTLE_MARGIN_S = 0.05

# rel_path, size, mtime_ns, and for an object its ETag (what makes it a new version)
FileKey = tuple[str, int, int, str | None]


class Triggers:
    def __init__(self, settings: Settings, url: str, runner_id: str | None = None) -> None:
        self.settings = settings
        self.url = url
        self.runner_id = runner_id or (
            f"{settings.worker.host_id}:{os.getpid()}:triggers:{uuid.uuid4().hex[:6]}")
        self.events = FolderEvents()
        self.stopping = threading.Event()
        self.next_scan: dict[int, float] = {}  # folder id → monotonic time of its next listing
        # Versions this process knows to be submitted, so a listing only asks the
        # database about new ones; forgotten when the file leaves the folder.
        self.known: dict[int, set[FileKey]] = {}
        self.last_error: dict[int, str] = {}
        self.settling = SettleTracker()  # bucket prefixes: what each listing saw
        self.submitted = 0
        self.log = log.bind(triggers_id=self.runner_id)

    def run(self, *, once: bool = False) -> int:
        """Watch and fire until stopped (``once``: one pass); the jobs submitted."""
        self.log.info("triggers:started", inotify=self.events.available,
                      scan_seconds=self.settings.triggers.watch_scan_seconds)
        try:
            while not self.stopping.is_set():
                try:
                    with db.connect(self.url, autocommit=True,
                                    application="mediaq-triggers") as conn:
                        self._loop(conn, once)
                        break
                except Exception as exc:  # the database, or a bug: log, wait, go on watching
                    self.log.warning("triggers:error", error=f"{type(exc).__name__}: {exc}")
                    if once:  # one pass was asked for: say it failed rather than retry
                        raise
                    self.stopping.wait(self.settings.worker.poll_seconds)
        finally:
            self.events.close()
        return self.submitted

    def stop(self) -> None:
        self.stopping.set()

    def _loop(self, conn: db.Connection, once: bool) -> None:
        while not self.stopping.is_set():
            folders = [WatchFolder.from_row(r) for r in db.fetch_all(conn,
                                                                     "watch_folders_enabled")]
            self.events.sync(folders)
            self.settling.forget({folder.id for folder in folders})
            for folder in folders:
                if once or self.next_scan.get(folder.id, 0.0) <= time.monotonic():
                    self._scan(conn, folder)
            self.submitted += len(fire_due(conn))
            if once:
                return
            self._wait(conn, folders)

    def _wait(self, conn: db.Connection, folders: list[WatchFolder]) -> None:
        """Sleep until a listing or a schedule is due, or inotify sees activity."""
        row = db.fetch_one(conn, "schedules_next_due")
        schedule_s = row["wait_s"] if row and row["wait_s"] is not None else None
        now = time.monotonic()
        waits = [self.settings.worker.poll_seconds,
                 *(due - now for due in self.next_scan.values())]
        if schedule_s is not None:
            waits.append(schedule_s)
        timeout = max(0.0, min(waits))
        by_id = {folder.id: folder for folder in folders}
        recursive = {folder.id for folder in folders if folder.recursive}
        if not self.events.available:
            self.stopping.wait(timeout)
            return
        for folder_id in self.events.wait(timeout, recursive):
            folder = by_id.get(folder_id)
            if folder is not None:  # look again once the file can have settled
                self.next_scan[folder_id] = min(
                    self.next_scan.get(folder_id, float("inf")),
                    time.monotonic() + folder.settle_seconds + SETTLE_MARGIN_S)

    # -- one watch folder ----------------------------------------------------------------

    def _scan(self, conn: db.Connection, folder: WatchFolder) -> None:
        interval = self.settings.triggers.watch_scan_seconds
        self.next_scan[folder.id] = time.monotonic() + interval
        if folder.unusable is not None:
            self._record(conn, folder, folder.unusable)
            return
        if folder.prefix is not None:
            self._scan_prefix(conn, folder)
            return
        if not folder.path.is_dir():
            self._record(conn, folder, f"{folder.path} is not a directory (unmounted?)")
            return
        now = time.time()
        ready: list[FileKey] = []
        soonest: float | None = None  # when the next unsettled file settles (epoch s)
        for found in walk_files(folder.path, folder.patterns, recursive=folder.recursive):
            settles_at = found.changed_at + folder.settle_seconds
            if settles_at <= now:
                ready.append((found.rel_path, found.size, found.mtime_ns, None))
            else:
                soonest = settles_at if soonest is None else min(soonest, settles_at)
        if soonest is not None:
            self.next_scan[folder.id] = min(self.next_scan[folder.id],
                                            time.monotonic() + soonest - now + SETTLE_MARGIN_S)
        self._record(conn, folder, self._submit_new(conn, folder, ready))

    def _scan_prefix(self, conn: db.Connection, folder: WatchFolder) -> None:
        """List a bucket prefix (objects.py): submit what settled, look again when the
        next object will have."""
        assert folder.prefix is not None
        try:
            s3 = s3ops.client(client_settings(self.settings.storage))
            listed = list_watched(s3, folder.prefix, folder.patterns,
                                  recursive=folder.recursive)
        except (PermanentError, TransientError) as exc:  # denied, missing, unreachable
            self._record(conn, folder, exc.message)
            return
        now = time.monotonic()
        ready, soonest = self.settling.ready(folder.id, listed, folder.settle_seconds, now)
        if soonest is not None:
            self.next_scan[folder.id] = min(self.next_scan[folder.id], soonest + SETTLE_MARGIN_S)
        self._record(conn, folder, self._submit_new(conn, folder, [
            (o.rel_path, o.size, o.modified_ns, o.etag) for o in ready]))

    def _submit_new(self, conn: db.Connection, folder: WatchFolder,
                    ready: list[FileKey]) -> str | None:
        """Submit versions not known here; an error message if the database refused."""
        known = self.known.setdefault(folder.id, set())
        new = sorted((key for key in ready if key not in known), key=lambda k: k[0])
        known &= set(ready)
        if not new:
            return None
        try:
            rows = db.fetch_all(conn, "watch_submit", {
                "folder_id": folder.id, "rel_paths": [k[0] for k in new],
                "sizes": [k[1] for k in new], "mtimes": [k[2] for k in new],
                "etags": [k[3] for k in new]})
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                raise
            error = exc.diag.message_primary or str(exc).strip()
            if self.last_error.get(folder.id) != error:  # once, not at every listing
                self.log.warning("watch:refused", folder_id=folder.id, error=error)
            self.last_error[folder.id] = error
            return error
        known.update(new)
        self.last_error.pop(folder.id, None)
        for row in rows:
            self.log.info("watch:submitted", folder_id=folder.id, path=row["rel_path"],
                          job_code=row["job_code"])
        self.submitted += len(rows)
        return None

    def _record(self, conn: db.Connection, folder: WatchFolder, error: str | None) -> None:
        db.execute(conn, "watch_folder_scanned", {"id": folder.id, "error": error})

