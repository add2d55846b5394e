"""The object-storage sweep in the worker: staged objects and unfinished multipart
uploads of attempts that are not running any more (a worker killed mid-upload, a stale
worker whose commit was refused) are removed every ``s3_sweep_seconds``."""

from __future__ import annotations

import threading

import structlog

from mediaq import db
from mediaq.storage.remote import ObjectStorage, SweepReport

log = structlog.get_logger("mediaq.object_sweeper")


def sweep_once(url: str, objects: ObjectStorage) -> SweepReport:
    def live(codes: list[str]) -> set[tuple[str, int]]:
        with db.connect(url, autocommit=True, application="mediaq-object-sweeper") as conn:
            rows = db.fetch_all(conn, "storage_attempts_live", {"codes": codes})
        return {(row["job_code"], int(row["attempt"])) for row in rows}

    report = objects.sweep(live)
    if report.objects_removed or report.uploads_aborted:
        log.info("storage:swept", objects=report.objects_removed,
                 multipart_uploads=report.uploads_aborted)
    return report


class ObjectSweeper(threading.Thread):
    def __init__(self, url: str, objects: ObjectStorage, every_seconds: float) -> None:
        super().__init__(name="mediaq-object-sweeper", daemon=True)
        self.url = url
        self.objects = objects
        self.every_seconds = every_seconds
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.every_seconds):
            try:
                sweep_once(self.url, self.objects)
            except Exception as exc:  # a store outage must not end the worker
                log.warning("storage:sweep_failed", error=str(exc))
