"""Every runnable step of a job is a task claimed on its own (issue 18): three worker
processes share one graph job (a skipped step, a three-item fan-out, a fan-in); kill -9
and SIGSTOP of the worker holding one item redo that item alone, with no stale write;
a cancel stops every running task; the task state machine lives in the database.

Each worker has a host of its own (MEDIAQ_HOST_ID), as three machines would: a host's
slots are shared by its processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import datetime
from typing import Any

import psycopg
import pytest

from mediaq.states import TaskState
from tests.helpers import MediaqEnv, diagnostic_workflow, requires_tool, wait_for
from tests.media_judge import ffmpeg

ITEM_SECONDS = 4  # long enough for three idle workers to pick up the three items


def graph(code: str, seconds: float = ITEM_SECONDS) -> dict[str, Any]:
    return diagnostic_workflow(
        code,
        {"step_name": "probe", "action": "echo", "parameters": {"value": {"height": 720}}},
        {"step_name": "transcode", "action": "echo", "needs": ["probe"],
         "when": "steps.probe.value.height > 1080"},
        {"step_name": "rungs", "action": "sleep", "needs": ["probe"],
         "parameters": {"seconds": seconds}, "for_each": {"value": [1080, 720, 480]}},
        {"step_name": "collect", "action": "echo", "needs": ["rungs", "transcode"]})


def workers(mq: MediaqEnv, count: int = 3, **env: str) -> list[subprocess.Popen[str]]:
    return [mq.start_worker("--id", f"w{n}", "--categories", "cpu", "--limits", "cpu=1",
                            host_id=f"host-{n}", **env)
            for n in range(1, count + 1)]


def executions(mq: MediaqEnv, code: str) -> list[dict[str, Any]]:
    return mq.query(
        "SELECT ws.step_name, se.item_index, se.status, se.output_data, se.started_at,"
        "       se.completed_at, se.error_class, se.worker_id"
        "  FROM step_executions se JOIN workflow_steps ws ON ws.id = se.step_id"
        "  JOIN workflow_jobs j ON j.id = se.job_id WHERE j.job_code = %s ORDER BY se.id",
        (code,))


def running_items(mq: MediaqEnv, code: str) -> list[dict[str, Any]]:
    return mq.query(
        "SELECT t.id, t.item_index, t.worker_id, t.attempt FROM job_tasks t"
        "  JOIN workflow_jobs j ON j.id = t.job_id"
        " WHERE j.job_code = %s AND t.item_index IS NOT NULL AND t.state = 'running'"
        " ORDER BY t.item_index", (code,))


def all_items_running(mq: MediaqEnv, code: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def three() -> bool:
        rows[:] = running_items(mq, code)
        return len(rows) == 3

    wait_for(three, timeout=60, message="three items running")
    return rows


def test_three_workers_share_a_graph_job(mq: MediaqEnv) -> None:
    mq.apply_workflow(graph("T-TASKS"))
    workers(mq)
    code = mq.submit("T-TASKS", mq.input_file("a.bin"))
    all_items_running(mq, code)
    # While the items run side by side, the job's figures are its tasks': probe done and
    # transcode skipped count whole (2 of 4 steps), the items by their own fractions,
    # collect not at all; the current step is the lowest one not done.
    job = mq.job(code)
    assert 50 <= float(job["progress_percent"]) <= 75, job["progress_percent"]
    assert job["current_step"] == 3
    wait_for(lambda: mq.job(code)["status"] == "completed", timeout=120)
    rows = executions(mq, code)
    skipped = [r for r in rows if r["step_name"] == "transcode"]
    assert [r["status"] for r in skipped] == ["skipped"]
    items = sorted((r for r in rows if r["step_name"] == "rungs"),
                   key=lambda r: r["item_index"])
    assert [(r["item_index"], r["status"]) for r in items] == [
        (0, "completed"), (1, "completed"), (2, "completed")]
    # The three items ran at the same time, on three workers.
    assert len({r["worker_id"] for r in items}) == 3
    assert max(r["started_at"] for r in items) < min(r["completed_at"] for r in items)
    (collect,) = [r for r in rows if r["step_name"] == "collect"]
    assert collect["started_at"] >= max(r["completed_at"] for r in items)
    assert collect["output_data"]["received"] == {"rungs": [1080, 720, 480]}
    tasks = mq.query("SELECT state, count(*) AS n FROM job_tasks t JOIN workflow_jobs j"
                     " ON j.id = t.job_id WHERE j.job_code = %s GROUP BY state", (code,))
    assert {r["state"]: r["n"] for r in tasks} == {"completed": 6, "skipped": 1}


def test_kill_9_of_an_items_worker_redoes_that_item_alone(mq: MediaqEnv) -> None:
    mq.apply_workflow(graph("T-TASKS-KILL", seconds=6))
    procs = workers(mq)
    code = mq.submit("T-TASKS-KILL", mq.input_file("k.bin"))
    running = all_items_running(mq, code)
    victim = next(r for r in running if r["item_index"] == 1)
    proc = procs[int(victim["worker_id"].removeprefix("w")) - 1]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: mq.job(code)["status"] == "completed", timeout=120)
    items = [r for r in executions(mq, code) if r["step_name"] == "rungs"]
    runs = {i: [r["status"] for r in items if r["item_index"] == i] for i in range(3)}
    assert runs == {0: ["completed"], 1: ["failed", "completed"], 2: ["completed"]}
    (lost,) = [r for r in items if r["status"] == "failed"]
    assert lost["worker_id"] == victim["worker_id"] and lost["error_class"] == "system"


def test_a_stopped_worker_past_its_lease_writes_nothing_stale(mq: MediaqEnv) -> None:
    mq.apply_workflow(graph("T-TASKS-STOP", seconds=6))
    procs = workers(mq, lease_seconds="3")
    code = mq.submit("T-TASKS-STOP", mq.input_file("s.bin"))
    running = all_items_running(mq, code)
    frozen = next(r for r in running if r["item_index"] == 1)
    proc = procs[int(frozen["worker_id"].removeprefix("w")) - 1]
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        # Its lease runs out: the item is rescued and claimed by another worker.
        wait_for(lambda: mq.one(
            "SELECT attempt FROM job_tasks WHERE id = %s", (frozen["id"],))["attempt"] > 1,
            timeout=60, message="the frozen worker's item rescued")
        rescued_at = datetime.now().astimezone()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    wait_for(lambda: mq.job(code)["status"] == "completed", timeout=120)
    mine = [r for r in executions(mq, code) if r["worker_id"] == frozen["worker_id"]]
    # Its execution of the item was closed by the rescue; nothing it wrote after.
    stale = [r for r in mine if r["item_index"] == 1 and r["status"] != "failed"]
    assert stale == []
    assert all(r["started_at"] < rescued_at for r in mine if r["item_index"] == 1)
    items = [r for r in executions(mq, code) if r["step_name"] == "rungs"]
    assert [r["item_index"] for r in items if r["status"] == "completed"].count(1) == 1
    wait_for(lambda: "job:lease_lost" in mq.worker_log(proc), timeout=30,
             message="the thawed worker to notice its loss")


def test_cancel_stops_every_running_task(mq: MediaqEnv) -> None:
    mq.apply_workflow(graph("T-TASKS-CANCEL", seconds=30))
    workers(mq)
    code = mq.submit("T-TASKS-CANCEL", mq.input_file("c.bin"))
    all_items_running(mq, code)
    asked = mq.one("SELECT now() AS at")["at"]
    mq.cli("cancel", code)
    # The request was committed between these two instants (the CLI's start-up is slow
    # on a loaded machine): the figure is given from the later one.
    cancelled_at = mq.one("SELECT now() AS at")["at"]
    wait_for(lambda: mq.job(code)["status"] == "cancelled", timeout=30)
    items = [r for r in executions(mq, code) if r["step_name"] == "rungs"]
    assert [r["status"] for r in items] == ["cancelled"] * 3
    states = [r["state"] for r in mq.query(
        "SELECT state FROM job_tasks t JOIN workflow_jobs j ON j.id = t.job_id"
        " WHERE j.job_code = %s AND t.state NOT IN ('completed', 'skipped')", (code,))]
    assert states and set(states) == {"cancelled"}
    last_stop = max(r["completed_at"] for r in items)
    print(f"every running task stopped {(last_stop - asked).total_seconds():.2f} s after"
          f" `mediaq cancel` started and {(last_stop - cancelled_at).total_seconds():.2f} s"
          f" after it returned (it took {(cancelled_at - asked).total_seconds():.2f} s)")


def test_a_job_of_a_workflow_without_steps_fails_saying_so(mq: MediaqEnv) -> None:
    """Seed 000's own INSERTs can make a workflow with no steps: its job fails at once
    with the reason, instead of waiting for ever with nothing to claim."""
    with mq.connect() as conn:
        conn.execute("INSERT INTO workflow_definitions (workflow_code, workflow_name)"
                     " VALUES ('T-EMPTY', 'no steps')")
        conn.execute("INSERT INTO workflow_jobs (workflow_id, input_file_path) SELECT id,"
                     " %s FROM workflow_definitions WHERE workflow_code = 'T-EMPTY'",
                     (str(mq.input_file("e.bin")),))
        code = conn.execute("SELECT job_code FROM workflow_jobs ORDER BY id DESC"
                            " LIMIT 1").fetchone()["job_code"]
    mq.run_burst()
    job = mq.job(code)
    assert (job["status"], job["error_class"]) == ("failed", "permanent")
    assert "the workflow has no steps" in job["error_message"]


def test_the_task_state_machine_is_the_databases(mq: MediaqEnv) -> None:
    with mq.connect() as conn:
        states = {r["state"] for r in conn.execute("SELECT state FROM task_states")}
        assert states == {s.value for s in TaskState}
        terminal = {r["state"] for r in conn.execute(
            "SELECT state FROM task_states WHERE terminal")}
        assert terminal == {s.value for s in TaskState if s.terminal}
    mq.apply_workflow(diagnostic_workflow("T-TASKS-SM", {"action": "noop"}))
    code = mq.submit("T-TASKS-SM", mq.input_file("m.bin"))
    mq.run_burst()
    assert mq.job(code)["status"] == "completed"
    with mq.connect() as conn, pytest.raises(psycopg.errors.CheckViolation,
                                             match="illegal task state transition"):
        conn.execute("UPDATE job_tasks SET state = 'running' WHERE job_id ="
                     " (SELECT id FROM workflow_jobs WHERE job_code = %s)", (code,))


def running_steps(mq: MediaqEnv, code: str) -> set[int]:
    """The step numbers of job ``code``'s running tasks."""
    return {r["step_number"] for r in mq.query(
        "SELECT t.step_number FROM job_tasks t JOIN workflow_jobs j ON j.id = t.job_id"
        " WHERE j.job_code = %s AND t.state = 'running'", (code,))}


@requires_tool("espeak-ng", "ffmpeg")
def test_analysis_runs_transcription_on_the_gpu_host_beside_the_cpu_steps(
        mq: MediaqEnv) -> None:
    """WF-VIDEO-ANALYZE on two hosts: one serving only `cpu`, one only `gpu_ai` with a
    VRAM budget. Transcription runs on the second while scenes and thumbnails run on the
    first, at the same time."""
    mq.seed()
    speech = mq.root / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+f2", "-s", "140", "-w", str(speech),
                    "please call me tomorrow morning at nine o'clock"], check=True)
    source = mq.inputs / "talk.mp4"
    # A CPU side of some seconds (grainy 640x360, one cpu slot: scenes, then thumbnails).
    ffmpeg("-f", "lavfi", "-i", "color=c=red:size=640x360:rate=25:d=4",
           "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:d=16,noise=alls=12:allf=t",
           "-i", speech,
           "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-map", "2:a",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
           source)
    # The GPU host first: a CPU-only fleet would send transcription to its fallback.
    mq.start_worker("--id", "gpu", "--categories", "gpu_ai", "--vram-mb", "8000",
                    host_id="host-gpu")
    wait_for(lambda: mq.query("SELECT 1 FROM workers WHERE worker_id = 'gpu'"
                              " AND status = 'running'"), timeout=60)
    cpu = mq.start_worker("--id", "cpu", "--categories", "cpu", "--limits", "cpu=1",
                          host_id="host-cpu")
    code = mq.submit("WF-VIDEO-ANALYZE", source)
    # Side by side whatever the machine's speed: the CPU host is frozen once a CPU step of
    # the graph runs, and the GPU host must claim transcription meanwhile (one that
    # waited for the CPU side would never start, and the wait fails).
    wait_for(lambda: running_steps(mq, code) & {3, 4}, timeout=120, interval=0.05,
             message="the CPU host to start scenes or thumbnails")
    os.kill(cpu.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: 5 in running_steps(mq, code), timeout=120, interval=0.05,
                 message="the GPU host to claim transcription")
    finally:
        os.kill(cpu.pid, signal.SIGCONT)
    wait_for(lambda: mq.job(code)["status"] in ("completed", "failed"), timeout=300)
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    rows = {r["step_name"]: r for r in executions(mq, code) if r["status"] == "completed"}
    transcribe = rows["Transcribe Audio"]
    cpu_side = [rows["Detect Scenes"], rows["Generate Thumbnails"]]
    assert transcribe["worker_id"] == "gpu"
    assert {r["worker_id"] for r in cpu_side} == {"cpu"}
    assert rows["Finalize Output"]["worker_id"] == "cpu"
    # Side by side: transcription started before the CPU steps ended, and they started
    # before it ended.
    assert transcribe["started_at"] < max(r["completed_at"] for r in cpu_side)
    assert min(r["started_at"] for r in cpu_side) < transcribe["completed_at"]
