"""The delivery loop: claim due outbox rows, deliver them in threads, record outcomes.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` in one short statement and held
as ``sending`` for :attr:`Notifier.hold_s`; no transaction stays open during a
delivery. A notifier killed mid-delivery leaves its rows to be taken again when
the hold runs out, with the same event id (at-least-once; receivers de-duplicate
on ``webhook-id``). Only the loop thread talks to the database; delivery threads
hand their outcomes back through a queue.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from typing import Any

import psycopg
import structlog

from mediaq import db, download_links
from mediaq.config import Settings
from mediaq.errors import ConfigError
from mediaq.notify.channels import Channels, Notification, Outcome
from mediaq.storage.setup import presigner

log = structlog.get_logger("mediaq.notify")

# A receiver's Retry-After is honoured up to a day.
MAX_RETRY_AFTER_S = 86_400.0
JITTER = 0.1


def parse_schedule(text: str) -> tuple[float, ...]:
    """Seconds before each retry, from ``"5,300,1800"``."""
    try:
        delays = tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise ConfigError("notify_retry_schedule: comma-separated seconds expected") from None
    if any(delay < 0 for delay in delays):
        raise ConfigError("notify_retry_schedule: delays must not be negative")
    return delays


def retry_delay(attempts: int, schedule: tuple[float, ...], retry_after_s: float | None,
                rng: random.Random | None = None) -> float | None:
    """Seconds until the next attempt after ``attempts`` tries; None once the schedule
    is used up. The receiver's Retry-After lengthens the wait, never shortens it."""
    if attempts > len(schedule):
        return None
    planned = schedule[attempts - 1]
    delay = planned * (rng or random).uniform(1 - JITTER, 1 + JITTER)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return delay


class Notifier:
    def __init__(self, settings: Settings, url: str, notifier_id: str | None = None) -> None:
        self.settings = settings
        self.url = url
        self.notifier_id = notifier_id or (
            f"{settings.worker.host_id}:{os.getpid()}:notify:{uuid.uuid4().hex[:6]}")
        self.channels = Channels(settings)
        self.schedule = parse_schedule(settings.notifications.retry_schedule)
        self.concurrency = settings.notifications.concurrency
        # Long enough for one attempt (connect, send, answer) with room to spare.
        self.hold_s = 2 * settings.notifications.timeout_seconds + 5
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.finished: queue.SimpleQueue[tuple[Notification, Outcome]] = queue.SimpleQueue()
        self.in_flight = 0
        self.delivered = 0
        self.log = log.bind(notifier_id=self.notifier_id)

    # -- life cycle --------------------------------------------------------------------

    def run(self, *, until_idle: bool = False) -> int:
        """Deliver until stopped (or, with ``until_idle``, until nothing is due and
        nothing is in flight); the number of rows handled."""
        listener = threading.Thread(target=self._listen, name="mediaq-notify-listen",
                                    daemon=True)
        listener.start()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="mediaq-notify") as pool:
            while not self.stopping.is_set():
                try:
                    with db.connect(self.url, autocommit=True,
                                    application="mediaq-notifier") as conn:
                        if self._loop(conn, pool, until_idle):
                            break
                except psycopg.OperationalError as exc:
                    self.log.warning("notifier:database_error", error=str(exc))
                    self.stopping.wait(self.settings.worker.poll_seconds)
            self._finish_in_flight()
        self.stopping.set()
        return self.delivered

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def _loop(self, conn: psycopg.Connection[Any], pool: ThreadPoolExecutor,
              until_idle: bool) -> bool:
        """Claim and record on ``conn`` until stopped; True when idle (``until_idle``)."""
        while not self.stopping.is_set():
            recorded = self._record_finished(conn)
            db.execute(conn, "notifications_reclaim_expired")
            claimed = self._claim(conn, pool)
            if claimed or recorded:
                continue
            wait_s = self._seconds_until_due(conn)
            if until_idle and self.in_flight == 0 and (wait_s is None or wait_s > 0):
                return True
            if self.in_flight >= self.concurrency:
                wait_s = None  # no room: wait for a delivery to finish, not for due rows
            self.wake.wait(min(self.settings.worker.poll_seconds, wait_s if wait_s is not None
                               else self.settings.worker.poll_seconds))
            self.wake.clear()
        return False

    def _listen(self) -> None:
        while not self.stopping.is_set():
            try:
                with db.connect(self.url, autocommit=True,
                                application="mediaq-notify-listen") as conn:
                    db.execute(conn, "listen_notifications")
                    while not self.stopping.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.wake.set()
            except psycopg.Error:
                self.stopping.wait(1.0)

    def _finish_in_flight(self) -> None:
        """Record what running deliveries end with (they end within the time limit)."""
        if self.in_flight == 0:
            return
        try:
            with db.connect(self.url, autocommit=True, application="mediaq-notifier") as conn:
                while self.in_flight:
                    note, outcome = self.finished.get(timeout=self.hold_s)
                    self.in_flight -= 1
                    self._record(conn, note, outcome)
        except (queue.Empty, psycopg.Error) as exc:
            # The hold runs out and another notifier takes the rows again.
            self.log.warning("notifier:unrecorded", in_flight=self.in_flight, error=repr(exc))

    # -- claiming ----------------------------------------------------------------------

    def _seconds_until_due(self, conn: psycopg.Connection[Any]) -> float | None:
        row = db.fetch_one(conn, "notifications_next_due")
        return None if row is None or row["wait_s"] is None else max(0.0, row["wait_s"])

    def _claim(self, conn: psycopg.Connection[Any], pool: ThreadPoolExecutor) -> int:
        room = self.concurrency - self.in_flight
        if room <= 0:
            return 0
        rows = db.fetch_all(conn, "notifications_claim", {
            "limit": room, "notifier": self.notifier_id, "hold_s": self.hold_s})
        rows.sort(key=lambda row: row["endpoint"] or "")
        for endpoint, group in groupby(rows, key=lambda row: row["endpoint"] or ""):
            for row in self._admitted(conn, endpoint, list(group)):
                self._start(pool, self._with_links(conn, _notification(row)))
        return len(rows)

    def _admitted(self, conn: psycopg.Connection[Any], endpoint: str,
                  rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of one endpoint that may be delivered now, per its breaker."""
        state = rows[0]["breaker_state"]
        if state in (None, "closed"):
            return rows
        if state == "disabled":
            for row in rows:
                self._record(conn, _notification(row), Outcome(
                    "failed", f"endpoint {endpoint} is disabled (it answered 410 Gone); "
                    "`mediaq notifications retry ID` enables it again"))
            return []
        # Open with its cool-down over (or a probe that never reported): one probe.
        won = db.fetch_one(conn, "endpoint_take_probe",
                           {"endpoint": endpoint, "hold_s": self.hold_s})
        admitted = rows[:1] if won else []
        for row in rows[len(admitted):]:
            db.execute(conn, "notification_release", {"id": row["id"],
                                                      "notifier": self.notifier_id})
        if won:
            self.log.info("breaker:probe", endpoint=endpoint)
        return admitted

    def _with_links(self, conn: psycopg.Connection[Any], note: Notification) -> Notification:
        """The note with signed download links on its outputs (web.public_url set): made
        at each attempt, so a retry hours later still carries live links."""
        web = self.settings.web
        if not web.public_url:
            return note
        payload = download_links.with_output_urls(
            conn, note.payload, self.settings.storage.outputs, web.public_url,
            web.link_ttl_seconds, presigner(self.settings.storage))
        return dataclasses.replace(note, payload=payload)

    def _start(self, pool: ThreadPoolExecutor, note: Notification) -> None:
        self.in_flight += 1
        pool.submit(self._deliver, note)

    def _deliver(self, note: Notification) -> None:
        try:
            outcome = self.channels.deliver(note)
        except Exception as exc:  # a bug in a channel must not lose the row's outcome
            outcome = Outcome("retry", f"delivery crashed: {exc!r}"[:300])
        self.finished.put((note, outcome))
        self.wake.set()

    # -- recording ---------------------------------------------------------------------

    def _record_finished(self, conn: psycopg.Connection[Any]) -> int:
        count = 0
        while True:
            try:
                note, outcome = self.finished.get_nowait()
            except queue.Empty:
                return count
            self.in_flight -= 1
            self._record(conn, note, outcome)
            count += 1

    def _record(self, conn: psycopg.Connection[Any], note: Notification,
                outcome: Outcome) -> None:
        fence = {"id": note.id, "notifier": self.notifier_id,
                 "status_code": outcome.status_code}
        if outcome.result == "sent":
            db.execute(conn, "notification_sent", fence)
            db.execute(conn, "endpoint_succeeded", {"endpoint": note.endpoint})
        elif outcome.result == "retry":
            self._retry_or_give_up(conn, note, outcome, fence)
        elif outcome.result == "gone":
            error = f"endpoint disabled: {outcome.detail}"
            db.execute(conn, "notification_failed", {**fence, "error": error})
            db.execute(conn, "endpoint_disabled", {"endpoint": note.endpoint, "error": error})
            db.execute(conn, "notifications_fail_endpoint",
                       {"endpoint": note.endpoint, "error": error})
            self.log.warning("endpoint:disabled", endpoint=note.endpoint)
        else:
            db.execute(conn, "notification_failed", {**fence, "error": outcome.detail})
            if outcome.status_code is not None:  # it answered: the endpoint itself is fine
                db.execute(conn, "endpoint_succeeded", {"endpoint": note.endpoint})
        self.delivered += 1
        self.log.info("notification:" + outcome.result, id=note.id,
                      event_type=note.notification_type, channel=note.channel,
                      endpoint=note.endpoint, attempt=note.attempts, detail=outcome.detail)

    def _retry_or_give_up(self, conn: psycopg.Connection[Any], note: Notification,
                          outcome: Outcome, fence: dict[str, Any]) -> None:
        delay = retry_delay(note.attempts, self.schedule, outcome.retry_after_s)
        if delay is None:
            error = f"gave up after {note.attempts} attempts: {outcome.detail}"
            db.execute(conn, "notification_failed", {**fence, "error": error})
        else:
            db.execute(conn, "notification_retry_later",
                       {**fence, "delay_s": delay, "error": outcome.detail})
        if outcome.endpoint_fault:
            breaker = db.fetch_one(conn, "endpoint_failed", {
                "endpoint": note.endpoint, "error": outcome.detail,
                "threshold": self.settings.notifications.breaker_threshold,
                "cooldown_s": self.settings.notifications.breaker_cooldown_seconds})
            if breaker is not None and breaker["state"] == "open":
                self.log.warning("breaker:open", endpoint=note.endpoint,
                                 failures=breaker["consecutive_failures"],
                                 until=str(breaker["open_until"]))


def _notification(row: dict[str, Any]) -> Notification:
    return Notification(
        id=row["id"], event_id=row["event_id"], notification_type=row["notification_type"],
        recipient=row["recipient"] or "", channel=row["channel"] or "log",
        endpoint=row["endpoint"] or "log", subject=row["subject"] or "",
        payload=row["payload"] or {}, attempts=row["attempts"],
    )

