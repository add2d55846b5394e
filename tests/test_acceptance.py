"""The core issue's acceptance checks, run as a user would: CLI, SQL, worker processes,
signals. Each prints the figure it measured."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for

pytestmark = pytest.mark.slow


def jpeg_bytes(width: int, height: int, seed: int) -> bytes:
    image = Image.new("RGB", (width, height), ((seed * 37) % 256, (seed * 91) % 256, 120))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_200_image_jobs_by_cli_sql_and_insert_with_3_workers(mq: MediaqEnv) -> None:
    mq.seed()
    files = [mq.input_file(f"img_{i:03}.jpg", jpeg_bytes(320 + i % 7, 240, i)) for i in range(200)]
    codes = [mq.submit("WF-IMAGE-PROCESS", f) for f in files[:12]]
    with mq.connect() as conn:
        for f in files[12:106]:
            conn.execute("SELECT mediaq.submit_job('WF-IMAGE-PROCESS', %s)", (str(f),))
        workflow_id = conn.execute(
            "SELECT id FROM workflow_definitions WHERE workflow_code = 'WF-IMAGE-PROCESS'"
            " AND is_current").fetchone()["id"]
        for f in files[106:]:
            conn.execute("INSERT INTO mediaq.workflow_jobs (workflow_id, input_file_path)"
                         " VALUES (%s, %s)", (workflow_id, str(f)))
    started = time.monotonic()
    workers = [mq.start_worker("--burst", "--id", f"w{i}") for i in range(3)]
    for w in workers:
        assert w.wait(300) == 0
    elapsed = time.monotonic() - started
    statuses = mq.query("SELECT status, count(*) AS n FROM workflow_jobs GROUP BY status")
    assert statuses == [{"status": "completed", "n": 200}]
    # each of the 5 steps of each job executed exactly once
    per_step = mq.one("""SELECT count(*) AS executions, count(DISTINCT (job_id, step_id)) AS pairs,
                                count(DISTINCT worker_id) AS workers
                           FROM step_executions""")
    assert per_step["executions"] == per_step["pairs"] == 1000
    assert per_step["workers"] == 3
    # outputs decode, with the sizes the steps promise
    for job in mq.query("SELECT output_metadata FROM workflow_jobs WHERE job_code = ANY(%s)",
                        (codes,)):
        outputs = job["output_metadata"]["outputs"]
        assert {o["role"] for o in outputs} >= {"primary", "thumbnail"}
        for out in outputs:
            with Image.open(out["path"]) as im:
                im.load()
                assert (im.width, im.height) == (out["width"], out["height"])
            if out["role"] == "thumbnail":
                assert max(out["width"], out["height"]) <= 300
    webp = mq.query("SELECT output_file_path FROM workflow_jobs")
    assert all(r["output_file_path"].endswith(".webp") for r in webp)
    print(f"200 image jobs, 3 workers: {elapsed:.1f}s, {200 / elapsed:.1f} jobs/s")


def test_kill_9_of_a_worker_running_a_sleep_job(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-SLEEP", {"action": "sleep",
                                                      "parameters": {"seconds": 3}}))
    code = mq.submit("T-SLEEP", mq.input_file("a.bin"))
    victim = mq.start_worker("--id", "victim")
    wait_for(lambda: mq.job(code)["status"] == "processing")
    mq.start_worker("--id", "survivor")
    os.kill(victim.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: mq.job(code)["worker_id"] == "survivor", timeout=20, message="rescue")
    rescued_after = time.monotonic() - killed
    wait_for(lambda: mq.job(code)["status"] == "completed", timeout=20)
    assert mq.query("SELECT job_code FROM workflow_jobs WHERE status = 'processing'") == []
    assert mq.job(code)["retry_count"] == 0
    print(f"rescue latency after kill -9: {rescued_after:.1f}s (lease 3s)")


def test_sigstopped_worker_cannot_change_a_rescued_job(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow(
        "T-STOP", {"action": "sleep", "parameters": {"seconds": 2}}, {"action": "noop"}))
    code = mq.submit("T-STOP", mq.input_file("a.bin"))
    stale = mq.start_worker("--id", "stale")
    wait_for(lambda: mq.job(code)["status"] == "processing")
    os.kill(stale.pid, signal.SIGSTOP)
    mq.start_worker("--id", "fresh")
    wait_for(lambda: mq.job(code)["status"] == "completed", timeout=30)
    before = mq.job(code)
    steps_before = mq.query("SELECT * FROM step_executions ORDER BY id")
    os.kill(stale.pid, signal.SIGCONT)
    time.sleep(4)  # the stale worker wakes, finishes its sleep and tries to write
    after = mq.job(code)
    assert after == before
    assert mq.query("SELECT * FROM step_executions ORDER BY id") == steps_before
    completed = mq.query("SELECT worker_id FROM step_executions WHERE status = 'completed'")
    assert [r["worker_id"] for r in completed] == ["fresh", "fresh"]
    stale.terminate()
    stale.wait(20)
    # it noticed it lost the job, or its frozen session was ended by the server
    assert any(event in mq.worker_log(stale) for event in ("job:lease_lost", "job:abandoned"))


def test_gpu_ai_limit_holds_across_three_workers(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow(
        "T-AI", {"action": "sleep", "parameters": {"seconds": 0.4}},
        resource_category="gpu_ai", vram_required=1000))
    codes = [mq.submit("T-AI", mq.input_file(f"{i}.bin")) for i in range(6)]
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            n = mq.one("SELECT count(*) AS n FROM workflow_jobs WHERE status = 'processing'")["n"]
            peak = max(peak, n)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [mq.start_worker("--burst", "--limits", "gpu_ai=1", "--vram-mb", "16000")
               for _ in range(3)]
    try:
        for w in workers:
            assert w.wait(120) == 0
    finally:
        done.set()
        sampler.join()
    assert [mq.job(c)["status"] for c in codes] == ["completed"] * 6
    assert peak == 1
    slots = mq.query("SELECT * FROM worker_slots WHERE category = 'gpu_ai'")
    assert len(slots) == 1 and slots[0]["job_id"] is None
    assert mq.one("SELECT vram_reserved_mb FROM worker_hosts")["vram_reserved_mb"] == 0


def test_job_needing_more_vram_waits_with_a_reason_while_others_flow(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-BIG", {"action": "noop"},
                                          resource_category="gpu_ai", vram_required=20000,
                                          default_priority=9))
    mq.apply_workflow(diagnostic_workflow("T-SMALL", {"action": "noop"},
                                          resource_category="gpu_ai", vram_required=2000,
                                          default_priority=1))
    mq.apply_workflow(diagnostic_workflow("T-CPU", {"action": "noop"}))
    big = mq.submit("T-BIG", mq.input_file("big.bin"))
    small = mq.submit("T-SMALL", mq.input_file("small.bin"))
    cpu = [mq.submit("T-CPU", mq.input_file(f"c{i}.bin")) for i in range(5)]
    worker = mq.start_worker("--vram-mb", "16000")
    wait_for(lambda: all(mq.job(c)["status"] == "completed" for c in [*cpu, small]))
    job = wait_for(lambda: (j := mq.job(big))["waiting_reason"] and j, message="reason")
    assert job["status"] == "queued"
    assert "VRAM" in job["waiting_reason"] and "16000 MB" in job["waiting_reason"]
    assert worker.poll() is None


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "zero_byte", "missing",
                                  "out_of_root", "not_an_image"])
def test_bad_inputs_fail_at_once_with_one_line(mq: MediaqEnv, kind: str, tmp_path: Path) -> None:
    mq.seed()
    good = jpeg_bytes(800, 600, 1)
    paths = {
        "corrupt": mq.input_file("corrupt.jpg", b"\xff\xd8\xff\xe0" + os.urandom(2000)),
        "truncated": mq.input_file("truncated.jpg", good[: len(good) // 2]),
        "zero_byte": mq.input_file("empty.jpg", b""),
        "missing": mq.inputs / "missing.jpg",
        "out_of_root": tmp_path / "elsewhere.jpg",
        "not_an_image": mq.input_file("notes.jpg", b"hello, I am text\n"),
    }
    (tmp_path / "elsewhere.jpg").write_bytes(good)
    path = paths[kind]
    before = digest(path) if path.exists() else None
    if kind in ("missing", "out_of_root"):  # the CLI refuses these up front…
        refused = mq.cli("submit", "WF-IMAGE-PROCESS", str(path), check=False)
        assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    with mq.connect() as conn:  # …and the worker refuses them when they come through SQL
        code = conn.execute("SELECT job_code FROM mediaq.submit_job('WF-IMAGE-PROCESS', %s)",
                            (str(path),)).fetchone()["job_code"]
    worker = mq.start_worker()
    job = wait_for(lambda: (j := mq.job(code))["status"] == "failed" and j, timeout=15)
    assert job["retry_count"] == 0 and job["error_class"] == "permanent"
    message = job["error_message"]
    assert "\n" not in message and path.name in message
    assert (digest(path) if path.exists() else None) == before
    assert worker.poll() is None  # the worker is alive
    print(f"{kind}: {message}")
