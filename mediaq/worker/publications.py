"""Outputs made public after their step's commit, never before it (issues 19, 20).

A step's commit records what it publishes (``publications``: each staged copy, its
final location, size and SHA-256) in the same transaction as the step; only then are the
files moved: a local staged file renamed to its final path, a staged object copied to
its final key. So a file at a final location always belongs to a committed step, and a
worker that lost its task (its commit refused) publishes nothing.

Between the commit and the move the worker may die, or its store may fail: the committed
step's files are then finished by whoever comes next, each idempotent (a final location
that already holds the recorded bytes is only marked). One publisher at a time moves a
publication (``claimed_by``/``claimed_until``: the committing worker holds its own from
the commit; a claim ends when its worker's session does, or after ``CLAIM_S``), so a
large object is never copied twice to its final key by two hosts at once:

- the same worker, right after its COMMIT (the normal path, ``publish_committed``);
- a task of the same job about to read earlier outputs, on any host (``finish_job``);
- any worker's maintenance loop (``mediaq.worker.maintenance.publisher``).

Staged copies of committed steps stay until published: the staging sweeps ask the
database (``staging_jobs_live``, ``storage_attempts_live``) and keep them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.errors import MediaqError
from mediaq.outputs import holds, publish_as, sha256_of
from mediaq.storage.remote import ObjectStorage
from mediaq.storage.uri import is_s3

log = structlog.get_logger("mediaq.publications")

CLAIM_S = 300
"""How long a publisher holds a publication it moves; a copy that outlasts it (an object
of many gigabytes) may be made a second time by the next comer (the same bytes)."""
WAIT_POLL_S = 0.5
"""How often a task waiting for another publisher's move looks again."""

FAILPOINT_ENV = "MEDIAQ_TEST_FAILPOINT"
"""Tests only: ``after_commit`` (or ``after_commit:<step number>``) kills the worker
with SIGKILL right after a step's COMMIT, before its outputs are published."""


@dataclass(frozen=True)
class Publication:
    """One output a step's commit makes public: ``staged`` (a canonical path, or the
    attempt's own ``s3://`` object) is to reach ``final``."""

    staged: str
    final: str
    size_bytes: int
    sha256: str


def failpoint(name: str, step_number: int) -> None:
    """Die here when the tests ask for it (``MEDIAQ_TEST_FAILPOINT``)."""
    wanted = os.environ.get(FAILPOINT_ENV)
    if wanted and wanted in (name, f"{name}:{step_number}"):
        log.warning("test:failpoint", failpoint=wanted)
        os.kill(os.getpid(), signal.SIGKILL)


def publish_one(objects: ObjectStorage, item: Publication, *, verify: bool) -> bool:
    """Move one committed output to its final location; True when it is there now.
    ``verify``: check the staged file's SHA-256 first (someone else's leftover)."""
    if is_s3(item.final):
        return objects.publish(item.staged, item.final, item.size_bytes, item.sha256)
    final = Path(objects.path_map.to_local(item.final))
    staged = Path(objects.path_map.to_local(item.staged))
    if final.exists() and holds(final, item.size_bytes, item.sha256):
        return True  # published already (a first publisher died before marking it)
    try:
        if staged.stat().st_size != item.size_bytes or (
                verify and sha256_of(staged) != item.sha256):
            log.error("publication:staged_changed", staged=item.staged, final=item.final)
            return False
    except FileNotFoundError:  # not on this host (or gone): left for one that sees it
        log.warning("publication:staged_missing", staged=item.staged, final=item.final)
        return False
    publish_as(staged, final)
    return True


def publish_rows(objects: ObjectStorage, rows: Sequence[db.Row | dict[str, Any]], *,
                 verify: bool) -> tuple[list[int], int]:
    """Publish recorded publications (rows of ``publications_claim``, or the commit's
    own): the ids now published, and how many are left (a store or disk error is logged,
    not raised: the next comer tries again)."""
    done: list[int] = []
    left = 0
    for row in rows:
        item = Publication(str(row["staged"]), str(row["final"]), int(row["size_bytes"]),
                           str(row["sha256"]))
        try:
            published = publish_one(objects, item, verify=verify)
        except (MediaqError, OSError) as exc:
            log.warning("publication:failed", final=item.final, error=str(exc))
            published = False
        if published:
            done.append(int(row["id"]))
        else:
            left += 1
    return done, left


def mark_done(pool: ConnectionPool[db.Connection], ids: list[int]) -> None:
    if ids:
        with db.transaction(pool) as conn:
            db.execute(conn, "publications_done", {"ids": ids})


def release(pool: ConnectionPool[db.Connection], worker_id: str, ids: list[int]) -> None:
    if ids:
        with db.transaction(pool) as conn:
            db.execute(conn, "publications_release", {"ids": ids, "worker_id": worker_id})


def publish_committed(pool: ConnectionPool[db.Connection], objects: ObjectStorage,
                      worker_id: str, ids: Sequence[int],
                      planned: Sequence[Publication]) -> int:
    """The committing worker, right after its COMMIT: publish what it recorded (``ids``
    in the order of ``planned``, claimed by the commit); how many are left for the next
    comer (released to it at once)."""
    rows = [{"id": pid, "staged": p.staged, "final": p.final, "size_bytes": p.size_bytes,
             "sha256": p.sha256} for pid, p in zip(ids, planned, strict=True)]
    done, left = publish_rows(objects, rows, verify=False)
    try:
        mark_done(pool, done)
        release(pool, worker_id, [pid for pid in ids if pid not in done])
    except Exception as exc:  # the files are in place; the next comer only marks them
        log.warning("publication:mark_failed", error=str(exc).splitlines()[0])
    return left


def _claim_and_publish(pool: ConnectionPool[db.Connection], objects: ObjectStorage,
                       worker_id: str, job_id: int | None, limit: int) -> tuple[int, int]:
    """Claim what no live publisher holds (of one job, or any), move it; (published,
    left by this publisher)."""
    with db.transaction(pool) as conn:
        rows = db.fetch_all(conn, "publications_claim", {
            "worker_id": worker_id, "job_id": job_id, "claim_seconds": CLAIM_S,
            "limit": limit})
    if not rows:
        return 0, 0
    done, left = publish_rows(objects, rows, verify=True)
    mark_done(pool, done)
    release(pool, worker_id, [int(r["id"]) for r in rows if int(r["id"]) not in done])
    log.info("publication:finished_leftovers", job_id=job_id, published=len(done), left=left)
    return len(done), left


def finish_job(pool: ConnectionPool[db.Connection], objects: ObjectStorage, worker_id: str,
               job_id: int, wait_s: float = CLAIM_S) -> int:
    """Before a task reads its job's earlier outputs: publish what committed steps of the
    job left unpublished (their worker died after its commit, or its store failed), and
    wait for those another live publisher is moving now; how many are still left."""
    deadline = time.monotonic() + wait_s
    while True:
        _, left = _claim_and_publish(pool, objects, worker_id, job_id, limit=1000)
        with pool.connection() as conn:
            pending = len(db.fetch_all(conn, "publications_pending_of_job",
                                       {"job_id": job_id}))
        if pending == 0 or left or time.monotonic() > deadline:
            return pending
        time.sleep(WAIT_POLL_S)  # another publisher holds them: its copy lands soon


def publish_leftovers(pool: ConnectionPool[db.Connection], objects: ObjectStorage,
                      worker_id: str, *, limit: int = 100) -> tuple[int, int]:
    """The maintenance loop's pass: committed outputs no live publisher holds (whose
    worker died, or whose job has no task left to read them); (published, left)."""
    return _claim_and_publish(pool, objects, worker_id, None, limit)
