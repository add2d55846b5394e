"""Faults: workers killed, frozen, stopped and cut off, the database crashing under load, a
full disk, and a long soak beside a transaction that never ends. Every test counts what
must never happen (a lost job, a double completion, a stale write accepted) and prints
the figures it measured; `make chaos` runs them in full, `make test` in a reduced form."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from PIL import Image
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.chaos.conftest import scaled
from tests.chaos.fault_helpers import (
    Receiver,
    assert_exactly_once,
    namespace,
    percentile,
    png_bytes,
    private_server,
    spread,
    staging_leftovers,
    wait_until,
)
from tests.helpers import MEDIAQ, MediaqEnv, diagnostic_workflow, wait_for

pytestmark = pytest.mark.chaos

Figure = Callable[[str], None]

# resize (one output), a pause, three thumbnails (three renames in one commit), a no-op
IMAGE_STEPS = (
    {"action": "resize_image", "parameters": {"max_dimension": 64}},
    {"action": "sleep", "parameters": {"seconds": 0.3}},
    {"action": "create_thumbnail", "parameters": {"sizes": [16, 24, 32], "format": "png"}},
    {"action": "noop"},
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def image_inputs(mq: MediaqEnv, count: int, prefix: str = "img") -> list[Path]:
    return [mq.input_file(f"{prefix}{i}.png", png_bytes(seed=i)) for i in range(count)]


def submit_many(mq: MediaqEnv, workflow: str, paths: list[Path]) -> list[str]:
    """Submit through SQL in one transaction (what a bulk client does); the job codes."""
    with mq.connect() as conn, conn.transaction():
        return [conn.execute("SELECT job_code FROM submit_job(%s, %s)",
                             (workflow, str(path))).fetchone()["job_code"] for path in paths]


def counts(mq: MediaqEnv) -> dict[str, int]:
    return {r["status"]: int(r["n"]) for r in
            mq.query("SELECT status, count(*) AS n FROM workflow_jobs GROUP BY status")}


def owned_by(mq: MediaqEnv, worker_id: str) -> list[dict[str, Any]]:
    return mq.query("SELECT id, job_code, attempt FROM workflow_jobs "
                    "WHERE status = 'processing' AND worker_id = %s", (worker_id,))


def unfinished(mq: MediaqEnv) -> dict[str, Any]:
    """What a stalled run looks like, for the failure message."""
    return {"counts": counts(mq), "jobs": mq.query(
        "SELECT job_code, status, worker_id, attempt, lease_expires_at, rescue_count, "
        "retry_count, retry_after, current_step, error_message FROM workflow_jobs "
        "WHERE status <> 'completed' ORDER BY id LIMIT 10"),
        "slots": mq.query("SELECT * FROM worker_slots WHERE job_id IS NOT NULL"),
        "workers": mq.query("SELECT worker_id, status, heartbeat_at FROM workers"),
        "sessions": mq.query("SELECT application_name, state, wait_event_type, wait_event, "
                             "left(query, 60) AS query, pg_blocking_pids(pid) AS blocked_by, pid "
                             "FROM pg_stat_activity WHERE datname = current_database() "
                             "AND pid <> pg_backend_pid() AND state <> 'idle'")}


def worker_in_step(mq: MediaqEnv, workers: list[str], step: int, timeout: float) -> str:
    """The first of ``workers`` seen with step ``step`` of a job open (its action or its
    commit running), polled as fast as the database answers; "" if none in ``timeout``."""
    deadline = time.monotonic() + timeout
    with mq.connect() as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT se.worker_id FROM step_executions se JOIN workflow_steps ws "
                "ON ws.id = se.step_id WHERE se.status = 'running' AND ws.step_number = %s "
                "AND se.worker_id = ANY(%s) LIMIT 1", (step, workers)).fetchone()
            if row:
                return str(row["worker_id"])
    return ""


def hold_in_commit(mq: MediaqEnv, workers: list[str]) -> tuple[str, psycopg.Connection[Any]] | None:
    """Catch a worker inside the commit of a thumbnail step, after its files are renamed
    into the job's folder and before the commit ends: a real row lock on the step's
    execution (taken while the action runs) stops its commit at the statement that closes
    the execution. The worker and the connection holding the lock (close it after the kill),
    or None if no such step came up."""
    conn = psycopg.connect(mq.url, row_factory=dict_row, options="-c search_path=mediaq,public")
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT se.id, se.worker_id, j.job_code FROM step_executions se "
            "JOIN workflow_steps ws ON ws.id = se.step_id JOIN workflow_jobs j ON j.id = se.job_id"
            " WHERE se.status = 'running' AND ws.step_number = 3 AND se.worker_id = ANY(%s) "
            "LIMIT 1 FOR UPDATE OF se SKIP LOCKED", (workers,)).fetchone()
        if row is None:
            conn.rollback()
            continue
        folder = mq.outputs / row["job_code"]
        # the resized image and the three thumbnails: all renamed, none committed yet
        if wait_until(lambda folder=folder: folder.exists() and len(list(folder.iterdir())) >= 4,
                      timeout=3.0, interval=0.01) is not None:
            return str(row["worker_id"]), conn
        conn.rollback()
    conn.close()
    return None


def kill_point(mq: MediaqEnv, job: dict[str, Any]) -> str:
    """Where a job was when its worker was killed: with a step execution open (inside the
    action or inside the commit that closes it), with files of an uncommitted step already
    renamed into its folder (killed mid-publish), or between two steps."""
    executions = mq.query("SELECT status, output_data FROM step_executions WHERE job_id = %s "
                          "AND job_attempt = %s", (job["id"], job["attempt"]))
    committed = {Path(o["path"]).name for e in mq.query(
        "SELECT output_data FROM step_executions WHERE job_id = %s AND status = 'completed'",
        (job["id"],)) for o in (e["output_data"] or {}).get("outputs", [])}
    folder = mq.outputs / job["job_code"]
    if folder.exists() and {p.name for p in folder.iterdir()} - committed:
        return "published, not committed"
    if any(e["status"] == "running" for e in executions):
        return "in a step or its commit"
    return "between steps"


def snapshot(mq: MediaqEnv, code: str) -> dict[str, Any]:
    """Everything a worker could write about a job: its row, its step executions, its
    outbox rows (what a notifier does to them aside) and its output files."""
    job = mq.job(code)
    folder = mq.outputs / code
    return {
        "job": job,
        "steps": mq.query("SELECT * FROM step_executions WHERE job_id = %s ORDER BY id",
                          (job["id"],)),
        "events": mq.query("SELECT id, notification_type, event_id FROM workflow_notifications"
                           " WHERE job_id = %s ORDER BY id", (job["id"],)),
        "files": {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
        if folder.exists() else {},
    }


# -- 1. kill -9 at random points ----------------------------------------------------------------


def test_kill_9_at_random_points_every_job_completes_exactly_once(
        mq: MediaqEnv, receiver: Receiver, figure: Figure) -> None:
    jobs, kills_wanted = scaled(50, 20), scaled(25, 6)
    mq.env.update({"MEDIAQ_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
                   "MEDIAQ_NOTIFY_TIMEOUT_SECONDS": "2"})
    mq.apply_workflow(diagnostic_workflow("C-KILL", *IMAGE_STEPS,
                                          notify={"job.completed": [receiver.url]}))
    rng = random.Random(os.environ.get("MEDIAQ_CHAOS_SEED", "kill-9"))
    with mq.connect() as conn, conn.transaction():  # a third pause mid-job, the rest none
        codes = [conn.execute(
            "SELECT job_code FROM submit_job('C-KILL', %s, params => %s)",
            (str(path), Jsonb({"sleep": {"seconds": rng.choice([0, 0, 0.3])}})),
        ).fetchone()["job_code"] for path in image_inputs(mq, jobs)]
    names = iter(range(1000))

    def start() -> tuple[str, subprocess.Popen[str]]:
        name = f"w{next(names)}"
        return name, mq.start_worker("--id", name, "--limits", "cpu=3")

    live = dict(start() for _ in range(3))
    rescue: list[float] = []
    where = {"in a step or its commit": 0, "published, not committed": 0,
             "between steps": 0}
    pending: list[tuple[int, int, float]] = []  # (job id, attempt killed, when)
    kills = 0
    deadline = time.monotonic() + scaled(600, 240)
    while time.monotonic() < deadline:
        done = counts(mq).get("completed", 0)
        now = {r["id"]: r for r in mq.query(
            "SELECT id, attempt, status FROM workflow_jobs WHERE id = ANY(%s)",
            ([p[0] for p in pending],))}
        for entry in list(pending):
            row = now[entry[0]]
            if row["attempt"] > entry[1] or row["status"] == "completed":
                rescue.append(time.monotonic() - entry[2])
                pending.remove(entry)
        if done == jobs and not pending:
            break
        if kills < kills_wanted and done < jobs:
            time.sleep(rng.uniform(0.1, 0.8))
            busy = [name for name in live if owned_by(mq, name)]
            held = None
            if kills % 3 == 1:  # as three thumbnails are being made or published
                in_step = worker_in_step(mq, list(live), 3, timeout=3.0)
                busy = [in_step] if in_step else busy
            elif kills % 3 == 2:  # in the commit, its outputs renamed into place
                held = hold_in_commit(mq, list(live))
                busy = [held[0]] if held else busy
            if busy:
                name = rng.choice(busy)
                proc = live.pop(name)
                os.kill(proc.pid, signal.SIGKILL)
                at = time.monotonic()
                proc.wait()
                kills += 1
                for row in owned_by(mq, name):
                    pending.append((row["id"], row["attempt"], at))
                    where[kill_point(mq, row)] += 1
                new_name, new_proc = start()
                live[new_name] = new_proc
            if held:
                held[1].close()
        else:
            time.sleep(0.1)
    assert counts(mq).get("completed", 0) == jobs, unfinished(mq)
    assert pending == [], f"jobs never rescued: {pending}"
    # every job.completed event delivered, under the one id of its outbox row
    wait_for(lambda: mq.one("SELECT count(*) AS n FROM workflow_notifications "
                            "WHERE status <> 'sent'")["n"] == 0, timeout=60,
             message="the outbox to drain")
    event_ids = {f"msg_{r['event_id'].replace('-', '')}": r["job_code"] for r in mq.query(
        "SELECT n.event_id::text, j.job_code FROM workflow_notifications n "
        "JOIN workflow_jobs j ON j.id = n.job_id WHERE n.notification_type = 'job.completed'")}
    received = receiver.ids()
    assert set(received) == set(event_ids), "a delivery under an id no outbox row has"
    assert sorted(event_ids.values()) == sorted(codes)
    stats = assert_exactly_once(mq, codes, len(IMAGE_STEPS))
    assert staging_leftovers(mq) == []
    assert kills >= min(kills_wanted, 1)
    figure(f"{jobs} jobs, {kills} kill -9 (jobs killed: "
           + ", ".join(f"{n} {point}" for point, n in where.items()) + "); rescue "
           f"{spread(rescue)} (lease 3 s); {stats['rescues']} rescues, {stats['executions']} "
           f"step executions for {jobs * len(IMAGE_STEPS)} steps; webhooks: "
           f"{len(received)} deliveries, {len(set(received))} ids, 0 jobs with two ids")


# -- 2. SIGSTOP past the lease ------------------------------------------------------------------


def test_sigstopped_worker_past_its_lease_never_writes(mq: MediaqEnv, figure: Figure) -> None:
    runs = scaled(20, 2)
    mq.apply_workflow(diagnostic_workflow(
        "C-STOP", {"action": "resize_image", "parameters": {"max_dimension": 48}},
        {"action": "sleep", "parameters": {"seconds": 1.5}},
        {"action": "create_thumbnail", "parameters": {"sizes": [16, 24], "format": "png"}},
        notify={"job.completed": ["chaos-log"]}))
    rng = random.Random(os.environ.get("MEDIAQ_CHAOS_SEED", "sigstop"))
    refused = {"job:lease_lost": 0, "job:abandoned": 0}
    stale_writes = 0
    took: list[float] = []
    for run in range(runs):
        code = mq.submit("C-STOP", mq.input_file(f"s{run}.png", png_bytes(seed=run)))
        stale = mq.start_worker("--id", f"stale{run}")
        wait_for(lambda code=code: mq.job(code)["status"] == "processing", timeout=30)
        time.sleep(rng.uniform(0.0, 1.2))
        os.kill(stale.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        fresh = mq.start_worker("--id", f"fresh{run}")
        wait_for(lambda code=code: mq.job(code)["status"] == "completed", timeout=60)
        took.append(time.monotonic() - stopped_at)
        before = snapshot(mq, code)
        os.kill(stale.pid, signal.SIGCONT)
        wait_for(lambda stale=stale: any(event in mq.worker_log(stale) for event in refused),
                 timeout=60, message="the stale worker to notice")
        for event in refused:
            refused[event] += event in mq.worker_log(stale)
        after = snapshot(mq, code)
        stale_writes += after != before
        assert after == before, f"run {run}: the stale worker changed {code}"
        assert_exactly_once(mq, [code], 3)
        for proc in (stale, fresh):
            proc.terminate()
            proc.wait(20)
        mq.workers.clear()
    figure(f"{runs} runs: {stale_writes} stale writes accepted; the stale worker saw its lease"
           f" lost {refused['job:lease_lost']}x, its frozen session ended "
           f"{refused['job:abandoned']}x; freeze to done elsewhere {spread(took)}")


def test_a_write_lost_to_the_database_hands_the_task_on_at_once(mq: MediaqEnv) -> None:
    """The worker's step commit is cut (its session terminated while it waits): the worker
    abandons the task, not knowing whether it is still its own, and gives up its lease
    once the database answers, so the task runs again within a rescue pass, not a lease
    later (the lease here, 600 s, is longer than the whole wait)."""
    mq.apply_workflow(diagnostic_workflow(
        "C-CUT", {"action": "sleep", "parameters": {"seconds": 3, "output_bytes": 100}}))
    code = mq.submit("C-CUT", mq.input_file("cut.bin"))
    worker = mq.start_worker("--id", "cut", lease_seconds="600")
    wait_for(lambda: mq.query("SELECT 1 FROM step_executions se JOIN workflow_jobs j ON"
                              " j.id = se.job_id WHERE j.job_code = %s", (code,)),
             timeout=60, interval=0.05, message="the step to start")
    with psycopg.connect(mq.url, autocommit=False) as holder:
        # The job row held: the step's commit (which locks it first) waits behind it.
        holder.execute("SELECT 1 FROM mediaq.workflow_jobs WHERE job_code = %s FOR UPDATE",
                       (code,))
        waiting = wait_for(lambda: mq.query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'mediaq-worker'"
            " AND wait_event_type = 'Lock' AND query LIKE '%%progress_percent = CASE WHEN%%'"),
            timeout=60, interval=0.05, message="the step's commit waiting on the job row",
            otherwise=lambda: mq.query("SELECT application_name, state, wait_event_type,"
                                       " left(query, 200) AS query FROM pg_stat_activity"))
        mq.query("SELECT pg_terminate_backend(%s)", (waiting[0]["pid"],))
        wait_for(lambda: "job:abandoned" in mq.worker_log(worker), timeout=60,
                 message="the worker to abandon the task")
        holder.rollback()
    wait_for(lambda: mq.job(code)["status"] == "completed", timeout=120,
             message="the task handed on and run again", otherwise=lambda: mq.job(code))
    task = mq.one("SELECT t.attempt, t.rescue_count FROM mediaq.job_tasks t JOIN"
                  " mediaq.workflow_jobs j ON j.id = t.job_id WHERE j.job_code = %s", (code,))
    assert (task["attempt"], task["rescue_count"]) == (2, 1)
    assert "leases_given_up" in mq.worker_log(worker)
    assert_exactly_once(mq, [code], 1)


# -- 3. PostgreSQL crashes under load ------------------------------------------------------------


def test_postgres_immediate_restarts_lose_nothing(tmp_path: Path, figure: Figure) -> None:
    jobs, restarts = scaled(1000, 150), scaled(5, 2)
    with private_server() as server:
        mq = MediaqEnv.create(tmp_path, server.url())
        try:
            mq.apply_workflow(diagnostic_workflow(
                "C-PG", {"action": "noop"}, {"action": "sleep", "parameters": {"seconds": 0.05}},
                {"action": "noop"}, notify={"job.completed": ["chaos-log"]}))
            source = mq.input_file("in.bin")
            codes = submit_many(mq, "C-PG", [source] * jobs)
            workers = [mq.start_worker("--id", f"pg{i}", "--limits", "cpu=6") for i in range(2)]
            reconnect: list[float] = []
            resumed: list[float] = []
            outage: list[float] = []
            for k in range(1, restarts + 1):
                wait_for(lambda k=k: counts(mq).get("completed", 0) >= k * jobs // (restarts + 1),
                         timeout=300, interval=0.2, message=f"progress before restart {k}")
                began = time.monotonic()
                server.restart_immediate()
                outage.append(time.monotonic() - began)
                since = mq.one("SELECT now() AS t")["t"]
                back = wait_until(lambda since=since: mq.one(
                    "SELECT count(*) FILTER (WHERE heartbeat_at > %s) AS n FROM workers",
                    (since,))["n"] == len(workers), timeout=60, interval=0.05)
                assert back is not None, f"workers did not reconnect after restart {k}"
                reconnect.append(back)
                working = wait_until(lambda since=since: mq.one(
                    "SELECT count(*) AS n FROM step_executions WHERE started_at > %s",
                    (since,))["n"] > 0, timeout=60, interval=0.05)
                assert working is not None, f"no work resumed after restart {k}"
                resumed.append(back + working)
                assert all(proc.poll() is None for proc in workers), "a worker died"
            if wait_until(lambda: counts(mq).get("completed", 0) == jobs, timeout=300) is None:
                raise AssertionError(f"jobs left unfinished: {unfinished(mq)}")
            assert all(proc.poll() is None for proc in workers), "a worker died"
            stats = assert_exactly_once(mq, codes, 3)
        finally:
            mq.stop_workers()
    figure(f"{jobs} jobs, {restarts} immediate restarts (down {spread(outage)}): 0 lost, "
           f"0 double completions; every worker reconnected (heartbeat) {spread(reconnect)} "
           f"after the server was up, work resumed {spread(resumed)} (the jobs cut off "
           "mid-write keep their slots until their lease ends); "
           f"{stats['rescues']} jobs rescued, {stats['lost_mid_step']} steps re-run")


# -- 4. SIGTERM during work ----------------------------------------------------------------------


def test_sigterm_drains_or_hands_back_within_the_grace(mq: MediaqEnv, figure: Figure) -> None:
    rounds, per_round, grace = scaled(6, 2), scaled(12, 6), 2.0
    mq.apply_workflow(diagnostic_workflow(
        "C-TERM", {"action": "noop"}, {"action": "sleep", "parameters": {"seconds": 0.5}}))
    rng = random.Random(os.environ.get("MEDIAQ_CHAOS_SEED", "sigterm"))
    codes: list[str] = []
    exits: list[float] = []
    handed_back = drained = 0
    for r in range(rounds):
        paths = [mq.input_file(f"t{r}-{i}.bin") for i in range(per_round)]
        with mq.connect() as conn, conn.transaction():
            for i, path in enumerate(paths):  # half finish within the grace, half cannot
                seconds = 0.5 if i % 2 else rng.uniform(4, 8)
                codes.append(conn.execute(
                    "SELECT job_code FROM submit_job('C-TERM', %s, params => %s)",
                    (str(path), Jsonb({"sleep": {"seconds": seconds}})),
                ).fetchone()["job_code"])
        workers = {f"t{r}w{i}": mq.start_worker("--id", f"t{r}w{i}", "--limits", "cpu=4",
                                                shutdown_grace_seconds=str(grace))
                   for i in range(2)}
        wait_for(lambda: counts(mq).get("processing", 0) >= 4, timeout=30)
        time.sleep(rng.uniform(0.1, 1.0))
        for name, proc in workers.items():
            running = owned_by(mq, name)
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            assert proc.wait(grace + 15) == 0
            exits.append(time.monotonic() - sent)
            assert owned_by(mq, name) == [], f"{name} exited still owning jobs"
            for job in running:  # each finished on this worker, or was given back unspent
                after = mq.one("SELECT status, attempt, retry_count, rescue_count "
                               "FROM workflow_jobs WHERE id = %s", (job["id"],))
                if after["status"] == "completed" and after["attempt"] == job["attempt"]:
                    drained += 1
                else:
                    assert after["retry_count"] == after["rescue_count"] == 0, after
                    handed_back += 1
        mq.workers.clear()
    assert mq.one("SELECT count(*) AS n FROM workflow_jobs WHERE rescue_count > 0 "
                  "OR retry_count > 0")["n"] == 0, "a stopped worker left a job to its lease"
    mq.run_burst("--limits", "cpu=8", timeout=180)
    stats = assert_exactly_once(mq, codes, 2)
    figure(f"{rounds} rounds, {len(codes)} jobs, grace {grace:.0f} s: exit after SIGTERM "
           f"{spread(exits)}; of the jobs running at SIGTERM {drained} drained, {handed_back} "
           "handed back, 0 left to a lease, 0 lost "
           f"({stats['executions']} step executions)")


# -- 5. a worker cut off the network -------------------------------------------------------------


def test_worker_cut_off_the_database_cannot_write_late(tmp_path: Path, figure: Figure) -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    runs = scaled(3, 1)
    with namespace() as ns, private_server(("127.0.0.1", ns.host_addr)) as server:
        mq = MediaqEnv.create(tmp_path, server.url())
        try:
            mq.apply_workflow(diagnostic_workflow(
                "C-NET", {"action": "resize_image", "parameters": {"max_dimension": 48}},
                {"action": "sleep", "parameters": {"seconds": 2}}, {"action": "noop"}))
            took: list[float] = []
            noticed: list[float] = []
            for run in range(runs):
                code = mq.submit("C-NET", mq.input_file(f"n{run}.png", png_bytes(seed=run)))
                env = {**mq.env, "MEDIAQ_DATABASE_URL": server.url(host=ns.host_addr)}
                log_path = tmp_path / f"cut{run}.log"
                with log_path.open("w") as log:
                    cut_off = subprocess.Popen(
                        [*ns.prefix(), *MEDIAQ, "worker",
                         "--id", f"cut{run}"], env=env, text=True, stdout=log,
                        stderr=subprocess.STDOUT)
                mq.workers.append(cut_off)
                wait_for(lambda code=code, run=run: mq.job(code)["worker_id"] == f"cut{run}"
                         and mq.job(code)["current_step"] == 2, timeout=60)
                ns.cut()
                cut_at = time.monotonic()
                rescuer = mq.start_worker("--id", f"rescuer{run}")
                wait_for(lambda code=code: mq.job(code)["status"] == "completed", timeout=60)
                took.append(time.monotonic() - cut_at)
                assert mq.job(code)["worker_id"] == f"rescuer{run}"
                before = snapshot(mq, code)
                time.sleep(2)  # cut off for well past the lease (3 s) and the rescue
                ns.restore()
                restored = time.monotonic()
                wait_for(lambda log_path=log_path: any(e in log_path.read_text()
                                     for e in ("job:lease_lost", "job:abandoned")),
                         timeout=120, interval=0.2, message="the cut-off worker to notice")
                noticed.append(time.monotonic() - restored)
                time.sleep(1)
                assert snapshot(mq, code) == before, "a late write from the cut-off worker"
                assert_exactly_once(mq, [code], 3)
                for proc in (cut_off, rescuer):
                    proc.terminate()
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                mq.workers.clear()
        finally:
            ns.restore()
            mq.stop_workers()
    figure(f"{runs} runs: cut to done elsewhere {spread(took)}; the cut-off worker saw its "
           f"job lost {spread(noticed)} after the link came back; 0 late writes accepted")


# -- 6. disk full ------------------------------------------------------------------------------


def disk_full_source(mq: MediaqEnv, action: str) -> Path:
    """An input whose output needs more room than a full disk has."""
    if action == "resize_image":
        source = mq.inputs / "big.png"
        Image.effect_noise((900, 700), 80).convert("RGB").save(source)
        return source
    return mq.input_file("big.txt", "".join(f"line {i}: {i * 7919 % 10007}\n"
                                            for i in range(40000)).encode())


@pytest.mark.parametrize("action", ["resize_image", "extract_text"])
def test_disk_full_is_transient_and_leaves_nothing_half_written(
        mq: MediaqEnv, figure: Figure, action: str) -> None:
    """resize_image classifies its own write errors; extract_text leaves a raw OSError to
    the engine."""
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mq.outputs)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        params = {"max_dimension": 900, "format": "png"} if action == "resize_image" else {}
        mq.apply_workflow(diagnostic_workflow(
            "C-FULL", {"action": action, "parameters": params}, retry_count=50))
        source = disk_full_source(mq, action)
        filler = mq.outputs / "filler"
        with filler.open("wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        code = mq.submit("C-FULL", source)
        # No free-space floor: this is the disk filling up under a running step (with the
        # floor the worker would not claim at all: tests/test_storage_health.py).
        mq.start_worker(retry_max_seconds="0.5", output_free_floor_mb="0")
        failed = wait_for(lambda: mq.query(
            "SELECT se.error_class, se.error_message FROM step_executions se JOIN workflow_jobs"
            " j ON j.id = se.job_id WHERE j.job_code = %s AND se.status = 'failed'", (code,)),
            timeout=60, message="the step to fail on the full disk")
        time.sleep(1.5)  # a few more attempts against the full disk
        job = mq.job(code)
        assert job["status"] in ("pending", "processing"), (job["status"], job["error_message"])
        assert failed[0]["error_class"] == "transient", failed
        assert "space" in failed[0]["error_message"].lower(), failed
        assert not (mq.outputs / code).exists() or list((mq.outputs / code).iterdir()) == []
        leftovers = [p for p in (mq.outputs / ".staging").rglob("*") if p.is_file()] \
            if (mq.outputs / ".staging").exists() else []
        attempts_full = len(mq.query("SELECT 1 FROM step_executions se JOIN workflow_jobs j "
                                     "ON j.id = se.job_id WHERE j.job_code = %s", (code,)))
        filler.unlink()
        freed = time.monotonic()
        wait_for(lambda: mq.job(code)["status"] == "completed", timeout=60)
        after_space = time.monotonic() - freed
        assert_exactly_once(mq, [code], 1)
        outputs = mq.job(code)["output_metadata"]["outputs"]
        if action == "resize_image":
            with Image.open(outputs[0]["path"]) as im:
                im.load()
                assert (im.width, im.height) == (900, 700)
        else:
            text = next(o for o in outputs if o["path"].endswith(".txt"))
            assert Path(text["path"]).read_text() == source.read_text()
        assert staging_leftovers(mq) == []
    finally:
        mq.stop_workers()
        subprocess.run(["umount", "-l", str(mq.outputs)], capture_output=True)
    assert leftovers == [], f"temp files left on the full disk: {leftovers}"
    figure(f"{action}: {attempts_full} attempts on the full disk, each failed transient "
           f"('{failed[0]['error_message']}'), no temp file left; done {after_space:.1f} s "
           "after space returned")


# -- 7. soak beside an open transaction ----------------------------------------------------------


def test_soak_beside_an_open_transaction(tmp_path: Path, figure: Figure) -> None:
    seconds, rate = scaled(180, 12), scaled(80, 50)
    with private_server(preload="pg_stat_statements") as server:
        mq = MediaqEnv.create(tmp_path, server.url())
        holder = psycopg.connect(server.url(), application_name="chaos-holder")
        try:
            mq.query("CREATE EXTENSION pg_stat_statements")
            mq.apply_workflow(diagnostic_workflow("C-SOAK", {"action": "noop"}))
            source = str(mq.input_file("in.bin"))
            # another session (a report, a forgotten psql) holds a snapshot the whole time
            holder.execute("SELECT count(*) FROM mediaq.workflow_jobs")
            assert holder.execute("SELECT txid_current()").fetchone() is not None
            workers = [mq.start_worker("--id", f"soak{i}", "--limits", "cpu=8")
                       for i in range(2)]
            wait_for(lambda: mq.one("SELECT count(*) AS n FROM workers")["n"] == 2, timeout=30)
            mq.query("SELECT pg_stat_statements_reset()")
            stop = threading.Event()
            idle: dict[tuple[int, Any], float] = {}
            samples = 0

            def sample() -> None:
                nonlocal samples
                with psycopg.connect(server.url(), autocommit=True) as conn:
                    while not stop.is_set():
                        for pid, xact, idle_s in conn.execute(
                                "SELECT pid, xact_start, extract(epoch FROM now() - state_change)"
                                " FROM pg_stat_activity WHERE application_name LIKE 'mediaq%%'"
                                " AND state LIKE 'idle in transaction%%'").fetchall():
                            idle[(pid, xact)] = max(idle.get((pid, xact), 0.0), float(idle_s))
                        samples += 1
                        stop.wait(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            submitted = offered = 0
            began = time.monotonic()
            with psycopg.connect(server.url(), autocommit=True) as feed:
                while (elapsed := time.monotonic() - began) < seconds:
                    # never more than a second's worth waiting: claim latency, not a backlog
                    waiting = feed.execute("SELECT count(*) FROM mediaq.workflow_jobs WHERE "
                                           "status IN ('pending', 'queued')").fetchone()
                    assert waiting is not None
                    due = min(int(elapsed * rate) - offered, rate - int(waiting[0]))
                    offered = max(offered, int(elapsed * rate))
                    if due > 0:
                        feed.execute("SELECT mediaq.submit_job('C-SOAK', %s) "
                                     "FROM generate_series(1, %s)", (source, due))
                        submitted += due
                    time.sleep(0.05)
            fed_for = time.monotonic() - began
            wait_for(lambda: counts(mq).get("completed", 0) == submitted, timeout=300,
                     interval=0.5, message="the soak's jobs to finish")
            drained = time.monotonic() - began
            stop.set()
            sampler.join()
            assert all(proc.poll() is None for proc in workers)
            latency = [float(r["s"]) * 1000 for r in mq.query(
                "SELECT extract(epoch FROM started_at - submitted_at) AS s FROM workflow_jobs"
                " ORDER BY id")]
            claim = mq.one("SELECT calls, mean_exec_time, max_exec_time FROM pg_stat_statements "
                           "WHERE query LIKE '%%WITH slot AS%%' ORDER BY calls DESC LIMIT 1")
            mq.query("SELECT pg_stat_force_next_flush()")
            time.sleep(1.0)
            dead = {r["relname"]: int(r["n_dead_tup"]) for r in mq.query(
                "SELECT relname, n_dead_tup FROM pg_stat_user_tables WHERE schemaname = 'mediaq'"
                " AND n_dead_tup > 0 ORDER BY n_dead_tup DESC LIMIT 4")}
            holder_age = mq.one("SELECT extract(epoch FROM now() - xact_start) AS s FROM "
                                "pg_stat_activity WHERE application_name = 'chaos-holder'")["s"]
        finally:
            holder.close()
            mq.stop_workers()
    long_idle = {key: s for key, s in idle.items() if s > 1.0}
    assert long_idle == {}, f"mediaq sessions idle in a transaction > 1 s: {long_idle}"
    tenth = max(1, len(latency) // 10)
    figure(f"{submitted} no-op jobs fed at {submitted / fed_for:.0f}/s for {fed_for:.0f} s (done "
           f"{drained:.0f} s after the start) beside a transaction open "
           f"{float(holder_age):.0f} s: enqueue-to-claim p50 {percentile(latency, 50):.0f} ms, "
           f"p99 {percentile(latency, 99):.0f} ms (first tenth p99 "
           f"{percentile(latency[:tenth], 99):.0f} ms, last tenth "
           f"{percentile(latency[-tenth:], 99):.0f} ms); claim statement {claim['calls']} calls,"
           f" mean {claim['mean_exec_time']:.2f} ms, max {claim['max_exec_time']:.1f} ms; "
           f"dead tuples {dead}; mediaq sessions idle in transaction > 1 s: {len(long_idle)} "
           f"({len(idle)} short ones seen, {samples} samples); load average "
           f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
