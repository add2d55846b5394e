"""Prometheus ``/metrics``: a collector that reads the database at every scrape.

Nothing is counted in process memory, so any number of ``mediaq web`` processes give
the same answer, and a restart loses nothing. ``media_jobs_total`` and
``media_notifications_total`` are current counts that can go down (a job moves from
pending to completed), so they are exposed untyped rather than as counters: the
names are fixed by the deploy files, and promtool only accepts ``_total`` on counters
or untyped metrics.

The ``mediaq_*`` resource gauges (disk free and total on the storage roots, worker RSS,
host load) come from two places: each live worker's last heartbeat report (see
``mediaq.host_stats``), and this web process's own look at its roots and load, so a
machine without workers is covered too. A (root, path, host) disk series is shown once:
the newest worker report wins over the web's view of the same host.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)

from mediaq import db
from mediaq.config import Settings
from mediaq.host_stats import load1, snapshot, watched_roots
from mediaq.notify.outbox import shown_recipient
from mediaq.web import breakers

MIB = 1024 * 1024

STEP_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
BREAKER_OPEN = {"open": 1, "half_open": 1, "disabled": 1, "closed": 0}


class DatabaseCollector:
    """Computes every mediaq metric from a few SQL queries per scrape."""

    def __init__(self, conn: db.Connection, settings: Settings | None = None) -> None:
        self.conn = conn
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        conn = self.conn
        yield from _jobs(conn)
        yield from _categories(conn)
        yield from _hosts(conn)
        yield _steps(conn)
        yield from _notifications(conn)
        yield _workers(conn)
        yield from _finished(conn)
        yield from _resources(conn, self.settings)
        yield from breakers.metrics(conn)


def _jobs(conn: db.Connection) -> Iterator[Metric]:
    total = UnknownMetricFamily("media_jobs_total", "Jobs per workflow code and status (a "
                                "current count, like a gauge).", labels=["type", "status"])
    for row in db.fetch_all(conn, "metrics_jobs_by_type_status"):
        total.add_metric([row["type"], row["status"]], row["n"])
    yield total
    counters = db.fetch_all(conn, "metrics_job_counters")
    yield GaugeMetricFamily("media_jobs_pending", "Jobs waiting to be claimed.",
                            value=sum(r["pending"] for r in counters))
    yield GaugeMetricFamily("media_jobs_dead_lettered", "Failed jobs (dead letters).",
                            value=sum(r["dead_lettered"] for r in counters))
    retries = CounterMetricFamily("media_job_retries", "Retries spent, per workflow code.",
                                  labels=["type"])
    rescues = CounterMetricFamily("media_job_rescues", "Jobs rescued from lost workers, "
                                  "per workflow code.", labels=["type"])
    for row in counters:
        retries.add_metric([row["type"]], row["retries"])
        rescues.add_metric([row["type"]], row["rescues"])
    yield retries
    yield rescues


def _categories(conn: db.Connection) -> Iterator[Metric]:
    label = ["resource_category"]
    running = GaugeMetricFamily("media_jobs_running", "Jobs processing now.", labels=label)
    depth = GaugeMetricFamily("media_queue_depth", "Jobs pending or queued.", labels=label)
    eligible = GaugeMetricFamily("media_queue_eligible", "Jobs that could start now (not "
                                 "retrying later, waiting for VRAM or paused): scale on this.",
                                 labels=label)
    oldest = GaugeMetricFamily("media_queue_oldest_age_seconds",
                               "Age of the oldest waiting job.", labels=label)
    oldest_eligible = GaugeMetricFamily("media_queue_oldest_eligible_age_seconds",
                                        "Age of the oldest job that could start now.",
                                        labels=label)
    for row in db.fetch_all(conn, "metrics_categories"):
        running.add_metric([row["category"]], row["running"])
        depth.add_metric([row["category"]], row["depth"])
        eligible.add_metric([row["category"]], row["eligible"])
        oldest.add_metric([row["category"]], row["oldest_age"])
        oldest_eligible.add_metric([row["category"]], row["oldest_eligible_age"])
    yield from (running, depth, eligible, oldest, oldest_eligible)


def _hosts(conn: db.Connection) -> Iterator[Metric]:
    # Base units and snake_case labels, so `promtool check metrics` lints clean (seed
    # 001's media_vram_used_mb and resourceCategory would not).
    used = GaugeMetricFamily("media_vram_used_bytes", "VRAM held by running jobs.",
                             labels=["host"])
    total = GaugeMetricFamily("media_vram_total_bytes", "VRAM budget of the machine.",
                              labels=["host"])
    for row in db.fetch_all(conn, "metrics_hosts"):
        used.add_metric([row["host"]], row["vram_reserved_mb"] * MIB)
        total.add_metric([row["host"]], row["vram_budget_mb"] * MIB)
    yield from (used, total)


def _steps(conn: db.Connection) -> Metric:
    hist = HistogramMetricFamily("media_step_duration_seconds",
                                 "Step execution durations.", labels=["workflow", "action"])
    for row in db.fetch_all(conn, "metrics_step_buckets", {"bounds": list(STEP_BUCKETS)}):
        counts: list[Any] = list(row["buckets"] or [])
        buckets = [(_le(b), float(n)) for b, n in zip(STEP_BUCKETS, counts, strict=True)]
        buckets.append(("+Inf", float(row["n"])))
        hist.add_metric([row["workflow"], row["action"] or ""], buckets,
                        sum_value=float(row["total"] or 0))
    return hist


def _le(bound: float) -> str:
    return repr(float(bound))


def _notifications(conn: db.Connection) -> Iterator[Metric]:
    total = UnknownMetricFamily("media_notifications_total", "Outbox rows per channel and "
                                "status (a current count).", labels=["channel", "status"])
    for row in db.fetch_all(conn, "metrics_notifications"):
        total.add_metric([row["channel"], row["status"]], row["n"])
    yield total
    breaker = GaugeMetricFamily("media_notification_breaker_open", "1 while an endpoint's "
                                "circuit breaker is open, half open or disabled.",
                                labels=["endpoint"])
    for row in db.fetch_all(conn, "metrics_breakers"):
        breaker.add_metric([shown_recipient(row["endpoint"])], BREAKER_OPEN.get(row["state"], 1))
    yield breaker


def _workers(conn: db.Connection) -> Metric:
    workers = GaugeMetricFamily("media_workers", "Worker processes per status.",
                                labels=["status"])
    for row in db.fetch_all(conn, "metrics_workers"):
        workers.add_metric([row["status"]], row["n"])
    return workers


def _finished(conn: db.Connection) -> Iterator[Metric]:
    finished = GaugeMetricFamily("mediaq_jobs_finished_15m", "Jobs that finished in the last "
                                 "15 minutes, per outcome (completed or failed).",
                                 labels=["outcome"])
    for row in db.fetch_all(conn, "metrics_jobs_finished_recent"):
        finished.add_metric([row["outcome"]], row["n"])
    yield finished


def _resources(conn: db.Connection, settings: Settings | None) -> Iterator[Metric]:
    free = GaugeMetricFamily("mediaq_disk_free_bytes", "Disk space free (to mediaq's user) "
                             "on a storage root, as a host sees it.",
                             labels=["root", "path", "host"])
    total = GaugeMetricFamily("mediaq_disk_total_bytes", "Size of the filesystem of a "
                              "storage root, as a host sees it.", labels=["root", "path", "host"])
    rss = GaugeMetricFamily("mediaq_worker_rss_bytes", "Resident memory of a live worker "
                            "process.", labels=["worker", "host"])
    load = GaugeMetricFamily("mediaq_host_load1", "1-minute load average of a host.",
                             labels=["host"])
    disks: dict[tuple[str, str, str], tuple[float, float]] = {}
    loads: dict[str, float] = {}
    for row in db.fetch_all(conn, "metrics_worker_resources"):  # newest report first
        host, report = row["host"], row["resources"] or {}
        for disk in report.get("disks") or []:
            key = (str(disk["root"]), str(disk["path"]), host)
            disks.setdefault(key, (float(disk["free"]), float(disk["total"])))
        if report.get("rss_bytes") is not None:
            rss.add_metric([row["worker_id"], host], float(report["rss_bytes"]))
        if report.get("load1") is not None:
            loads.setdefault(host, float(report["load1"]))
    if settings is not None:  # the web host's own view of its roots
        host = settings.worker.host_id
        for disk in snapshot(watched_roots(settings.storage))["disks"]:
            disks.setdefault((disk["root"], disk["path"], host), (disk["free"], disk["total"]))
        own_load = load1()
        if own_load is not None:
            loads.setdefault(host, own_load)
    for (root, path, host), (free_bytes, total_bytes) in sorted(disks.items()):
        free.add_metric([root, path, host], free_bytes)
        total.add_metric([root, path, host], total_bytes)
    for host, value in sorted(loads.items()):
        load.add_metric([host], value)
    yield from (free, total, rss, load)


def exposition(conn: db.Connection, settings: Settings | None = None) -> bytes:
    """The text exposition format of every metric, read now on ``conn`` (one transaction,
    so the numbers agree with each other); with ``settings``, this host's own disk and
    load figures as well."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(conn, settings))  # type: ignore[arg-type]
    return generate_latest(registry)
