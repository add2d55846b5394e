"""Issue 19's multi-host proof, tried as a user would (the README's commands only): three
worker hosts (network namespaces, each its own MEDIAQ_HOME and host id) on Debian's
PostgreSQL server, logged in over password-authenticated TCP as a non-superuser database
owner. Migrations, LISTEN/NOTIFY wake-ups (polling off), per-host slots, the rescue of a
`kill -9`ed worker's job on another host, and the fence against a host cut off the
network past its lease."""

from __future__ import annotations

import hashlib
import itertools
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.fleet.conftest import FULL, Figure, scaled
from tests.fleet.harness import (
    Fleet,
    Host,
    apply,
    hosts_on,
    one_execution_completed,
    start_workers,
    wait_listening,
)
from tests.helpers import diagnostic_workflow, wait_for
from tests.publication_watch import PublicationWatch

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def share(hosts: list[Host], folder: Path, **settings: str) -> None:
    """Point every host at the same input folder (a NAS mounted alike everywhere) and
    the given settings."""
    folder.mkdir(exist_ok=True)
    for host in hosts:
        host.inputs = folder
        host.env["MEDIAQ_INPUT_ROOTS"] = str(folder)
        host.env.update({f"MEDIAQ_{k.upper()}": v for k, v in settings.items()})


def test_three_hosts_on_debian_postgresql_spread_and_rescue(
        three_hosts: Fleet, tmp_path: Path, figure: Figure) -> None:
    """Migrations and seeding over TCP as a non-superuser; jobs spread over three hosts
    whose workers claim only when NOTIFY wakes them (polling set to an hour); per-host
    limits hold; a worker killed with -9 mid-job has its job rescued on another host,
    with the default lease (10 s)."""
    with hosts_on(three_hosts, tmp_path) as hosts:
        share(hosts, tmp_path / "nas-in", poll_seconds="3600")
        for host in hosts:
            del host.env["MEDIAQ_LEASE_SECONDS"]  # the default lease
        first = hosts[0]
        assert "upgraded" in first.cli("db", "upgrade").stdout
        assert "WF-IMAGE-PROCESS" in hosts[1].cli("workflows", "seed").stdout
        login = first.one("SELECT current_user AS who, r.rolsuper, version() AS v "
                          "FROM pg_roles r WHERE r.rolname = current_user")
        assert login["who"] == "mediaq_owner" and not login["rolsuper"]
        assert "Debian" in login["v"], login["v"]
        apply(hosts[2], diagnostic_workflow(
            "F-SPREAD", {"action": "sleep", "parameters": {"seconds": 2, "output_bytes": 512}}),
              diagnostic_workflow(
            "F-HOLD", {"action": "sleep", "parameters": {"seconds": 3}}))
        workers = start_workers(hosts, "--limits", "cpu=1", "--no-triggers")
        wait_listening(hosts)  # polling is off: a worker not yet subscribed would sleep on

        # Six jobs in one statement from host 0; three single-slot hosts share them.
        sources = [first.input_file(f"s{i}.bin", bytes([i]) * 64) for i in range(6)]
        out = first.cli("submit", "F-SPREAD", "--from-list", "-",
                        stdin="".join(f"{p}\n" for p in sources)).stdout
        codes = [w for w in out.split() if w.startswith("JOB-")]
        assert len(codes) == 6, out
        wait_for(lambda: all(first.job(c)["status"] == "completed" for c in codes),
                 timeout=180, interval=0.2, message="the six jobs to complete")
        ran_on = Counter(one_execution_completed(first, c)[-1]["host"] for c in codes)
        assert set(ran_on) == {"host-0", "host-1", "host-2"}, ran_on
        # Each host has one cpu slot: its executions never overlap in time.
        spans = first.query(
            "SELECT w.host, se.started_at, se.completed_at FROM step_executions se "
            "JOIN workers w ON w.worker_id = se.worker_id ORDER BY w.host, se.started_at")
        for a, b in itertools.pairwise(spans):
            if a["host"] == b["host"]:
                assert b["started_at"] >= a["completed_at"], (a, b)

        # kill -9 of the worker running a job: rescued on another host.
        rescued_after: list[float] = []
        runs = scaled(5, 1)
        for run in range(runs):
            code = first.submit("F-HOLD", first.input_file(f"h{run}.bin", b"hold"))
            victim = wait_for(lambda code=code: first.job(code)["status"] == "processing"
                              and first.job(code)["worker_id"], timeout=60,
                              message="the job to be claimed")
            host = next(h for h in hosts if victim.startswith(h.name))
            host.kill9(workers.pop(victim))
            killed = time.monotonic()
            rescuer = wait_for(lambda code=code, victim=victim: (
                first.job(code)["worker_id"] not in (None, victim)
                and first.job(code)["status"] == "processing" and first.job(code)["worker_id"]),
                timeout=60, interval=0.05, message="the job to be rescued elsewhere")
            rescued_after.append(time.monotonic() - killed)
            assert not rescuer.startswith(host.name), (victim, rescuer)
            wait_for(lambda code=code: first.job(code)["status"] == "completed", timeout=90,
                     message="the rescued job to complete")
            rows = one_execution_completed(first, code)
            assert [r["error_class"] for r in rows if r["worker_id"] == victim] == ["system"]
            assert first.job(code)["retry_count"] == 0  # a lost worker spends no retry
            if run + 1 < runs:
                workers.update(start_workers([host], "--limits", "cpu=1", "--no-triggers"))
    figure(f"6 jobs over 3 hosts, NOTIFY only: {dict(sorted(ran_on.items()))}; kill -9 "
           f"rescued on another host after p50 {statistics.median(rescued_after):.2f} s, "
           f"max {max(rescued_after):.2f} s (n={len(rescued_after)}, default 10 s lease)")


def snapshot(host: Host, code: str, outputs: Path) -> dict[str, Any]:
    """Everything a worker could write about a job: its row, its step executions, its
    outbox rows and its published files."""
    job = host.job(code)
    folder = outputs / code
    return {
        "job": job,
        "steps": host.query("SELECT * FROM step_executions WHERE job_id = %s ORDER BY id",
                            (job["id"],)),
        "events": host.query("SELECT id, notification_type, event_id FROM "
                             "workflow_notifications WHERE job_id = %s ORDER BY id",
                             (job["id"],)),
        "files": {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
        if folder.exists() else {},
    }


def test_a_host_cut_off_past_its_lease_writes_nothing_late(
        three_hosts: Fleet, tmp_path: Path, figure: Figure) -> None:
    """Host 2's veth goes down mid-step for longer than the lease (3 s): hosts 0 and 1
    finish the job; when the link comes back the cut-off worker's writes touch nothing
    (rows, outbox, and the shared output folder, where a late publish would land)."""
    shared_out = tmp_path / "nas-out"
    shared_out.mkdir()
    took: list[float] = []
    stale_writes = 0
    with hosts_on(three_hosts, tmp_path) as hosts:
        share(hosts, tmp_path / "nas-in", output_root=str(shared_out))
        cut_host, others = hosts[2], hosts[:2]
        cut_host.cli("db", "upgrade")
        apply(cut_host, diagnostic_workflow(
            "F-CUT", {"action": "sleep", "parameters": {"seconds": 4, "output_bytes": 4096}},
            {"action": "noop"}))
        for run in range(scaled(3, 1)):
            code = cut_host.submit("F-CUT", cut_host.input_file(f"c{run}.bin", b"cut"))
            (victim, proc), = start_workers([cut_host], "--no-triggers").items()
            wait_for(lambda code=code, victim=victim: cut_host.job(code)["worker_id"] == victim
                     and cut_host.job(code)["progress_percent"] > 0, timeout=60,
                     message="the cut-off host to be mid-step")
            cut_host.namespace.cut()
            cut_at = time.monotonic()
            # Started after the cut (their start overlaps the lease they must wait out):
            # started before, one of them could have claimed the job first.
            rescuers = start_workers(others, "--no-triggers")
            wait_for(lambda code=code: cut_host.job(code)["status"] == "completed",
                     timeout=120, interval=0.1, message="the job to complete elsewhere")
            took.append(time.monotonic() - cut_at)
            assert cut_host.job(code)["worker_id"] in rescuers
            for host, (_, rescuer) in zip(others, rescuers.items(), strict=True):
                host.stop(rescuer)  # nothing but the cut-off worker may write from now on
            before = snapshot(cut_host, code, shared_out)
            cut_host.namespace.restore()
            wait_for(lambda proc=proc: any(
                event in cut_host.worker_log(proc) for event in ("job:lease_lost",
                                                                 "job:abandoned")),
                timeout=180, interval=0.2, message="the cut-off worker to see its job lost")
            cut_host.stop(proc)  # once it has exited it can write nothing more
            after = snapshot(cut_host, code, shared_out)
            stale_writes += sum(before[k] != after[k] for k in before)
            assert after == before, "a late write from the cut-off host"
            rows = one_execution_completed(cut_host, code)
            assert {r["error_class"] for r in rows if r["worker_id"] == victim} == {"system"}
            listed = after["job"]["output_metadata"]["outputs"]
            assert sorted(after["files"]) == sorted(Path(o["path"]).name for o in listed)
            for output in listed:
                data = after["files"][Path(output["path"]).name]
                assert hashlib.sha256(data).hexdigest() == output["sha256"]
    figure(f"{len(took)} cuts past the 3 s lease: done on another host "
           f"p50 {statistics.median(took):.2f} s after the cut, max {max(took):.2f} s; "
           f"{stale_writes} stale writes")


def completed_count(host: Host) -> int:
    """Completed jobs; 0 while the server is restarting."""
    try:
        return int(host.one("SELECT count(*) AS n FROM workflow_jobs "
                            "WHERE status = 'completed'")["n"])
    except psycopg.OperationalError:
        return 0


@pytest.mark.skipif(not FULL, reason="a long run: make chaos only (MEDIAQ_CHAOS=full)")
def test_server_restarts_under_load_publish_every_output_once(
        three_hosts: Fleet, tmp_path: Path, figure: Figure) -> None:
    """`pg_ctl restart -m fast` of Debian's server while three hosts commit steps into a
    shared output folder: no job lost or run twice, and no output path is published
    twice (watched while it happens, not only at the end)."""
    jobs, restarts = 150, 8
    shared_out = tmp_path / "nas-out"
    shared_out.mkdir()
    server = three_hosts.postgres
    with hosts_on(three_hosts, tmp_path) as hosts:
        share(hosts, tmp_path / "nas-in", output_root=str(shared_out))
        first = hosts[0]
        first.cli("db", "upgrade")
        apply(first, diagnostic_workflow(
            # Steps that do little but publish: final commits follow each other closely, so
            # a restart at any moment is likely to land in one.
            "F-RST", {"action": "sleep", "parameters": {"seconds": 0, "output_bytes": 2048}},
            {"action": "sleep", "parameters": {"seconds": 0, "output_bytes": 2048}},
            {"action": "noop"}))
        sources = [first.input_file(f"r{i}.bin", bytes([i % 256]) * 32) for i in range(jobs)]
        with PublicationWatch(shared_out) as watch:
            start_workers(hosts, "--no-triggers")
            out = first.cli("submit", "F-RST", "--from-list", "-",
                            stdin="".join(f"{p}\n" for p in sources)).stdout
            codes = [w for w in out.split() if w.startswith("JOB-")]
            assert len(codes) == jobs, out
            for k in range(1, restarts + 1):
                wait_for(lambda k=k: completed_count(first) >= k * jobs // (restarts + 1),
                         timeout=300, interval=0.1, message=f"progress before restart {k}")
                server.stop("fast")
                server.start()
            wait_for(lambda: completed_count(first) == jobs, timeout=600, interval=0.2,
                     message="every job to complete")
        for code in codes:
            one_execution_completed(first, code)
        twice = watch.published_twice()
        recorded = {o["path"] for r in first.query(
            "SELECT output_metadata FROM workflow_jobs WHERE job_code = ANY(%s)", (codes,))
            for o in r["output_metadata"]["outputs"]}
        unknown = sorted(p for p in watch.inodes if p not in recorded
                         and Path(p).exists())
    figure(f"{jobs} jobs on 3 hosts, {restarts} fast restarts: {len(twice)} output paths "
           f"published twice ({len(watch.different_bytes())} of them with different bytes), "
           f"{len(unknown)} files at final paths the database does not "
           f"record; every job completed once")
    assert twice == [], twice
    assert unknown == [], unknown
