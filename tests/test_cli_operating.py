"""Operating commands as an operator uses them: jobs, show, watch, stats, retry."""

from __future__ import annotations

import json
import subprocess

from tests.helpers import MEDIAQ, MediaqEnv, diagnostic_workflow, wait_for


def test_watch_follows_a_job_to_the_end(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-WATCH", {"action": "sleep",
                                                      "parameters": {"seconds": 1.5}}))
    code = mq.submit("T-WATCH", mq.input_file("a.bin"))
    mq.start_worker()
    watched = mq.cli("watch", code, "--interval", "0.2", timeout=30)
    assert watched.returncode == 0
    assert watched.stdout.strip().splitlines()[-1] == f"{code} completed"
    assert "100%" in watched.stdout


def test_watch_exits_1_for_a_failed_job(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-WFAIL", {"action": "fail",
                                                      "parameters": {"message": "nope"}}))
    code = mq.submit("T-WFAIL", mq.input_file("a.bin"))
    mq.run_burst()
    watched = mq.cli("watch", code, check=False)
    assert watched.returncode == 1
    assert watched.stdout.strip().splitlines()[-1] == f"{code} failed: step 1 'fail 1' failed: nope"


def test_show_jobs_stats_and_retry_of_a_dead_letter(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow(
        "T-OPS", {"action": "noop"}, {"action": "fail", "parameters": {"times": 1}}))
    code = mq.submit("T-OPS", mq.input_file("a.bin"))
    mq.run_burst()
    assert mq.job(code)["status"] == "failed"
    shown = mq.cli("show", code).stdout
    assert "failed on purpose" in shown and "Step 2 'fail 2' started" in shown
    listed = json.loads(mq.cli("jobs", "--status", "failed", "--json").stdout)
    assert [j["job_code"] for j in listed] == [code]
    stats = json.loads(mq.cli("stats", "--json").stdout)
    assert stats["failed"] == 1 and stats["jobs_by_type"] == {"T-OPS": 1}
    assert mq.cli("retry", code).stdout.strip() == f"{code}: pending"
    mq.run_burst()
    job = mq.job(code)
    assert job["status"] == "completed" and "--- RETRY ATTEMPT 1 ---" in job["log"]
    # the finished step 1 was not run again
    assert mq.one("SELECT count(*) AS n FROM step_executions se JOIN workflow_steps ws"
                  " ON ws.id = se.step_id WHERE ws.step_number = 1")["n"] == 1
    stats = json.loads(mq.cli("stats", "--json").stdout)
    assert stats["completed"] == 1 and stats["failed"] == 0


def test_unknown_job_is_one_line_and_exit_1(mq: MediaqEnv) -> None:
    for command in ("show", "cancel", "retry", "watch"):
        result = mq.cli(command, "JOB-NOPE", check=False)
        assert result.returncode == 1
        assert result.stderr.strip() == "error: job JOB-NOPE does not exist"


def test_cli_without_a_database_says_so_in_one_line(mq: MediaqEnv) -> None:
    env = {**mq.env, "MEDIAQ_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = subprocess.run([*MEDIAQ, "jobs"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: database unavailable:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_stats_counts_vram_of_running_gpu_jobs(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-GPU", {"action": "sleep",
                                                    "parameters": {"seconds": 5}},
                                          resource_category="gpu_encode", vram_required=4000))
    code = mq.submit("T-GPU", mq.input_file("a.bin"))
    mq.start_worker("--vram-mb", "16000")
    wait_for(lambda: mq.job(code)["status"] == "processing")
    stats = json.loads(mq.cli("stats", "--json").stdout)
    assert stats["total_vram_used"] == 4000 and stats["total_vram_available"] == 16000
    assert mq.one("SELECT vram_reserved_mb FROM worker_hosts")["vram_reserved_mb"] == 4000


def test_a_job_bumped_to_priority_10_starts_before_the_others(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-PRIO", {"action": "noop"}))
    codes = [mq.submit("T-PRIO", mq.input_file(f"{i}.bin"), "--priority", "1")
             for i in range(4)]
    late = codes[-1]  # submitted last, at the same priority: it would start last
    assert mq.cli("priority", late, "10").stdout.strip() == f"{late}: priority 1 -> 10 (pending)"
    job = mq.job(late)
    assert job["priority"] == 10 and "--- PRIORITY SET TO 10 BY" in job["log"]
    # the media_queue mirror (seed dashboards read it) follows; the others are untouched
    mirror = {r["job_code"]: r["priority"] for r in mq.query(
        "SELECT j.job_code, q.priority FROM media_queue q JOIN workflow_jobs j ON j.id = q.job_id")}
    assert mirror == {**{c: 1 for c in codes}, late: 10}
    # a paused job may change too, and keeps its status
    mq.cli("pause", codes[0])
    assert mq.cli("priority", codes[0], "2").stdout.strip() == \
        f"{codes[0]}: priority 1 -> 2 (paused)"
    mq.cli("resume", codes[0])
    mq.run_burst("--limits", "cpu=1")
    started = sorted(codes, key=lambda c: mq.job(c)["started_at"])
    assert started == [late, codes[0], codes[1], codes[2]]


def test_priority_is_refused_for_a_processing_job_and_a_bad_number(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-PRUN", {"action": "sleep",
                                                     "parameters": {"seconds": 30}}))
    code = mq.submit("T-PRUN", mq.input_file("a.bin"))
    for bad in ("11", "0", "-1"):
        refused = mq.cli("priority", code, bad, check=False)
        assert refused.returncode == 1
        assert refused.stderr.strip() == ("error: priority must be a whole number from 1 to 10 "
                                          f"(10 is the most urgent), not {bad}")
    mq.start_worker()
    wait_for(lambda: mq.job(code)["status"] == "processing")
    refused = mq.cli("priority", code, "9", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (f"error: {code}: priority can change only while the job "
                                      "waits; it is processing")
    assert mq.job(code)["priority"] == 5
    assert mq.cli("priority", "JOB-NOPE", "5", check=False).stderr.strip() == \
        "error: job JOB-NOPE does not exist"
