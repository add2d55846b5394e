"""Committed outputs left unpublished, finished by any worker: a worker that died (or
lost its store) between a step's COMMIT and moving its files leaves publications that no
later task of the job may come for (the job's last step, say). Every worker looks every
few seconds, on its pool, with one indexed statement when there are none, and takes
only what no live publisher holds (``mediaq.worker.publications.publish_leftovers``)."""

from __future__ import annotations

import random
import threading

import structlog
from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.storage.remote import ObjectStorage
from mediaq.worker.publications import publish_leftovers

log = structlog.get_logger("mediaq.publisher")

EVERY_SECONDS = 5.0
"""How often a worker looks for leftovers (jittered)."""


class Publisher(threading.Thread):
    def __init__(self, pool: ConnectionPool[db.Connection], objects: ObjectStorage,
                 worker_id: str) -> None:
        super().__init__(name="mediaq-publisher", daemon=True)
        self.pool = pool
        self.objects = objects
        self.worker_id = worker_id
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(random.uniform(0.75, 1.25) * EVERY_SECONDS):
            try:
                publish_leftovers(self.pool, self.objects, self.worker_id)
            except Exception as exc:  # an outage must not end the worker
                log.warning("publisher:error", error=str(exc).splitlines()[0])
