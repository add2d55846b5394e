"""The worker's one long-lived session: its liveness lock and its wake-ups.

The session holds the worker's liveness lock (``worker_liveness_lock``) for the whole
life of the process: when the process dies, PostgreSQL ends the session and frees the
lock, and the rescuers hand its jobs on at once instead of waiting out the lease.

The same session LISTENs. Work and freed slots are announced per category
(``wake_channel()``), and this process listens to a category's channels only while it
has room in that category: a busy process is not woken for work it cannot take, and a
freed slot wakes only the processes of its own machine. Listening is reconciled every
``RECONCILE_S``; a wake-up missed in between is caught by the producer's polling
fallback, and a process that finishes a job claims again on its own.

The same session also holds the machine's duties (``host_duties_lock``) in one process
of each machine: that process runs the notifier and the triggers for all of them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import psycopg
import structlog
from psycopg import sql
from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.worker.resources import Capacity

log = structlog.get_logger("mediaq.listener")
RECONCILE_S = 0.25  # how often the channels listened to follow this process's room
DUTIES_RETRY_S = 5.0  # how often a process without its machine's duties asks for them


class Listener:
    def __init__(
        self, url: str, pool: ConnectionPool[db.Connection], *, worker_id: str, host: str,
        capacity: Capacity, notice: Callable[[str], None],
        on_duties: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.pool = pool
        self.worker_id = worker_id
        self.host = host
        self.capacity = capacity
        self.notice = notice
        # Called once this session holds its machine's duties (``host_duties_lock``):
        # the daemon then starts the notifier and the triggers; None: not wanted.
        self.on_duties = on_duties
        self.duties = False
        self._duties_tried = 0.0
        # Set by the daemon once its jobs are drained and handed back: the lock must
        # outlive them, or rescuers would take the jobs of a worker that is finishing.
        self.halt = threading.Event()
        self.conn: db.Connection | None = None
        self.channels: dict[str, tuple[str, str]] = {}  # category -> (work, slot) channels
        self.listening: set[str] = set()
        self.log = log.bind(worker_id=worker_id)

    def open(self) -> bool:
        """Open the session and take the liveness lock; whether it is held. Called
        before the worker registers, so no job is ever claimed without the lock."""
        conn = db.connect(self.url, autocommit=True, application="mediaq-listen")
        row = db.fetch_one(conn, "worker_liveness_lock", {"worker_id": self.worker_id})
        held = bool(row and row["held"])
        if not held:  # a half-open session of this worker id may still hold it
            self.log.warning("listen:liveness_lock_busy")
        rows = db.fetch_all(conn, "wake_channels", {"host": self.host,
                                                    "categories": list(self.capacity.categories)})
        self.channels = {r["category"]: (r["work"], r["slot"]) for r in rows}
        db.execute(conn, "listen_jobs")
        self.listening = set()
        self.conn = conn
        return held

    def _take_duties(self, conn: db.Connection) -> None:
        """Ask for this machine's duties (at most every ``DUTIES_RETRY_S``) until held;
        once this process runs them it keeps them, even across a reconnection (another
        process may then run them too for a while: both claim their rows SKIP LOCKED)."""
        if self.on_duties is None or self.duties:
            return
        now = time.monotonic()
        if now - self._duties_tried < DUTIES_RETRY_S:
            return
        self._duties_tried = now
        row = db.fetch_one(conn, "host_duties_lock", {"host": self.host})
        if row and row["held"]:
            self.duties = True
            self.log.info("listen:host_duties", host=self.host)
            self.on_duties()

    def run(self) -> None:
        """Wake the producer on NOTIFY; reconnect (and retake the lock) after outages."""
        while not self.halt.is_set():
            try:
                if self.conn is None:
                    held = self.open()
                    with db.transaction(self.pool) as tx:
                        db.execute(tx, "worker_liveness_set",
                                   {"worker_id": self.worker_id, "liveness": held})
                    self.notice("reconnected")  # anything may have changed meanwhile
                conn = self.conn
                assert conn is not None
                while not self.halt.is_set():
                    self._reconcile(conn)
                    self._take_duties(conn)
                    for notify in conn.notifies(timeout=RECONCILE_S, stop_after=1):
                        self.notice(notify.payload)
            except psycopg.Error as exc:
                self.log.warning("listen:error", error=str(exc))
                self.close()
                self.halt.wait(1.0)

    def _reconcile(self, conn: db.Connection) -> None:
        """LISTEN to the channels of the categories with room here, UNLISTEN the rest."""
        wanted = {ch for c in self.capacity.free_categories() for ch in self.channels.get(c, ())}
        for channel in wanted - self.listening:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        for channel in self.listening - wanted:
            conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
        self.listening = wanted

    def close(self) -> None:
        """End the session (which frees the liveness lock); after ``run`` returned."""
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
