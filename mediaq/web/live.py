"""Live updates for open dashboards: server-sent events fed by PostgreSQL LISTEN.

One thread per web process holds one session that LISTENs on ``mediaq_dashboard`` (sent
by the trigger ``jobs_notify_dashboard`` when a job's status, progress, stage, priority
or waiting reason changes). On a wake-up it reads the ``dash_live`` row once and hands
it to every open stream of this process, however many browsers watch: the database
sees one read per burst of changes, not one poll per browser per second.

Each event carries what changed, so a page updates its jobs table, counters and progress
bars without asking the API: the counters (the ``dash_live`` row), ``jobs`` (each job
whose row differs from the last read, as the job list shows it, with ``was``: its status
before, null for a job new since then, "?" when this process had not seen it) and
``gone`` (deleted jobs, as they were). The process keeps the last read of every
waiting/running/paused job and of the newest ``NEWEST`` jobs to diff against. ``jobs``
is null when there is nothing to diff against (the first read) or too much to send
(more than ``TRACK_MAX`` rows): pages then reload their view, as they do when a
``seq`` was skipped (a slow reader only gets the newest event). Browsers show a
"disconnected" state while their stream is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import structlog

from mediaq import db
from mediaq.web import serialise
from mediaq.web.api import with_etas

log = structlog.get_logger("mediaq.web.live")
COALESCE_S = 0.5
"""A burst of changes (a worker finishing a batch, a bulk retry) within this long is one
read and one event: a browser reloads its view at most about twice a second."""
WAIT_S = 0.5  # how often the thread looks up from LISTEN (to stop, or serve a newcomer)
PING_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
STREAM_S = 300.0
"""A stream ends after this long and the browser opens the next one at once, which
authenticates its token again (a revoked token stops getting events)."""
RETRY_MS = 2000  # the EventSource-style reconnect hint sent to clients
SHOWN_LIVE = ("pending", "queued", "processing", "paused")  # dash_live_jobs reads them all
REFRESH_S = 60.0
"""While someone watches, the rows are read this often even without a change, estimates
compared too (they move with the clock, and when workers come and go): one read per
process, instead of each page reloading its jobs table."""
NEWEST = 200  # the newest jobs diffed whatever their state (the landing page shows 100)
TRACK_MAX = 2000  # past this many rows an event says "reload" instead of listing changes
# Estimates move with the clock, not with a change: their values travel with a changed
# row but make it "changed" only on the REFRESH_S read; an estimate appearing or going
# (a worker came for that category, or went) and the blocked reason always count.
ESTIMATES = ("estimatedSeconds", "estimatedStart", "estimatedFinish")


class JobsDiff:
    """The last read of the jobs that pages may show, and what changed since."""

    def __init__(self) -> None:
        self.known: dict[int, dict[str, Any]] | None = None  # numeric id -> job as shown
        self.newest_seen = 0

    def tracked(self) -> list[int]:
        return list(self.known or ())

    def update(self, rows: list[dict[str, Any]], estimates: bool = False) -> dict[str, Any]:
        """``jobs`` and ``gone`` for the event; ``rows`` are serialised jobs, newest
        first, from ``dash_live_jobs``; ``estimates``: a row whose ETA moved changed."""
        compared = (lambda job: job) if estimates else _compared
        before, newest = self.known, self.newest_seen
        partial = len(rows) >= TRACK_MAX
        self.known = {int(job["numericId"]): job for job in rows}
        self.newest_seen = max([newest, *self.known])
        if before is None or partial:
            self._forget_settled()
            return {"jobs": None, "gone": []}
        changed = []
        for key, job in self.known.items():
            old = before.get(key)
            if old is None:
                changed.append({"job": job, "was": None if key > newest else "?"})
            elif compared(old) != compared(job):
                changed.append({"job": job, "was": old["status"]})
        gone = [job for key, job in before.items() if key not in self.known]
        self._forget_settled()
        return {"jobs": changed, "gone": gone}

    def _forget_settled(self) -> None:
        """Drop the finished jobs older than the newest ``NEWEST`` once their change has
        gone out: the next read does not ask for them (so their absence then does not
        read as a deletion), and the tracked list does not grow with history."""
        assert self.known is not None
        newest = sorted(self.known, reverse=True)[:NEWEST]
        floor = newest[-1] if newest else 0
        self.known = {key: job for key, job in self.known.items()
                      if key >= floor or job["status"] in SHOWN_LIVE}


def _compared(job: dict[str, Any]) -> dict[str, Any]:
    return {k: (v is None if k in ESTIMATES else v) for k, v in job.items()}


class LiveHub:
    """The LISTEN session of one web process and the streams it feeds."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stopping = threading.Event()
        self.wanted = threading.Event()  # a newcomer needs the current row
        self.lock = threading.Lock()
        self.streams: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str]]] = set()
        self.latest: str | None = None  # the last event sent, for newcomers
        self.stale = True  # changes were announced while nobody listened
        self.seq = 0
        self.diff = JobsDiff()
        self.read_at = 0.0  # time.monotonic() of the last read
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="mediaq-web-live", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def subscribe(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        with self.lock:
            self.streams.add((asyncio.get_running_loop(), queue))
            if self.latest is not None and not self.stale:
                queue.put_nowait(self.latest)
            else:
                self.wanted.set()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        with self.lock:
            self.streams = {s for s in self.streams if s[1] is not queue}

    def run(self) -> None:
        """LISTEN, read on wake-ups, publish; reconnect after the database went away
        (telling the browsers meanwhile, which keep their stream)."""
        while not self.stopping.is_set():
            conn: db.Connection | None = None
            try:
                conn = db.connect(self.url, autocommit=True, application="mediaq-web-live")
                db.execute(conn, "dash_listen")
                self.stale = True
                self.wanted.set()  # anything may have changed while we were away
                self._serve(conn)
            except psycopg.Error as exc:
                log.warning("live:error", error=str(exc))
                self._publish("down", {"reason": "database unavailable"})
                self.stopping.wait(1.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()

    def _serve(self, conn: db.Connection) -> None:
        while not self.stopping.is_set():
            woken = any(True for _ in conn.notifies(timeout=WAIT_S, stop_after=1))
            if woken:
                self.stale = True
                # let the rest of the burst arrive, then drain it: one read for all
                self.stopping.wait(COALESCE_S)
                for _ in conn.notifies(timeout=0.001):
                    pass
            with self.lock:
                listening = bool(self.streams)
            if self.stale and listening and (woken or self.wanted.is_set()):
                self.wanted.clear()
                self._read(conn)
            elif listening and time.monotonic() - self.read_at > REFRESH_S:
                self._read(conn, estimates=True)

    def _read(self, conn: db.Connection, estimates: bool = False) -> None:
        """The counters and the jobs pages may show, in one transaction (one snapshot:
        the counters agree with the rows), diffed against the last read."""
        with conn.transaction():
            row = db.fetch_one(conn, "dash_live") or {}
            found = db.fetch_all(conn, "dash_live_jobs", {
                "newest": NEWEST, "tracked": self.diff.tracked(), "limit": TRACK_MAX})
            found = with_etas(conn, found)
        self.read_at = time.monotonic()
        changes = self.diff.update([serialise.job(r) for r in found], estimates)
        self.seq += 1
        self.stale = False
        self._publish("live", {**serialise.record(row), "changedAt": serialise.plain(
            row.get("changed_at")), "seq": self.seq, **changes})

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        text = f"event: {kind}\ndata: {json.dumps(data)}\n\n"
        with self.lock:
            if kind == "live":
                self.latest = text
            streams = list(self.streams)
        for loop, queue in streams:
            with contextlib.suppress(RuntimeError):  # that stream's loop has closed
                loop.call_soon_threadsafe(_offer, queue, text)


def _offer(queue: asyncio.Queue[str], text: str) -> None:
    """Keep only the newest event for a slow reader: each event is the whole row."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(text)


async def stream(hub: LiveHub) -> AsyncIterator[str]:
    """One browser's event stream: the current row at once, then each change."""
    queue = hub.subscribe()
    ends = time.monotonic() + STREAM_S
    try:
        yield f"retry: {RETRY_MS}\n: mediaq live\n\n"
        while time.monotonic() < ends:
            try:
                yield await asyncio.wait_for(queue.get(), PING_S)
            except TimeoutError:
                yield ": ping\n\n"
    finally:
        hub.unsubscribe(queue)
