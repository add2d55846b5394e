"""Storage health (issue 25): a worker whose output root is a missing mount claims
nothing and says so (log, `mediaq workers`, `mediaq stats`, the jobs' waiting reason),
nothing fails, and it goes on once the mount appears; the checks one by one; a missing
input on a healthy host is still a permanent error."""

from __future__ import annotations

import json
from pathlib import Path

from mediaq.config import Settings
from mediaq.worker.storage_health import check, memory_problem
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for


def test_a_missing_output_mount_stops_claims_and_nothing_fails(mq: MediaqEnv) -> None:
    mount = mq.root / "mnt" / "media"
    mq.env["MEDIAQ_OUTPUT_ROOT"] = str(mount / "outputs")
    mq.apply_workflow(diagnostic_workflow("T-STORE", {"action": "noop"}))
    codes = [mq.one("SELECT job_code FROM submit_job('T-STORE', %s)",
                    (str(mq.input_file(f"in{i}.bin")),))["job_code"] for i in range(3)]
    worker = mq.start_worker()
    problem = f"output root {mount / 'outputs'} is missing (not mounted?)"
    wait_for(lambda: mq.query("SELECT 1 FROM workers WHERE claim_problem = %s", (problem,)),
             timeout=60, message="the worker to report its storage")
    waiting = wait_for(lambda: [j for j in mq.query(
        "SELECT status, waiting_reason, retry_count, attempt FROM workflow_jobs "
        "WHERE job_code = ANY (%s)", (codes,)) if j["waiting_reason"]], timeout=30,
        message="the jobs to say why they wait")
    host = mq.one("SELECT host FROM workers")["host"]
    assert {j["waiting_reason"] for j in waiting} == {f"host {host} does not claim: {problem}"}
    assert all(j["status"] == "queued" and j["retry_count"] == 0 and j["attempt"] == 0
               for j in waiting)
    assert mq.one("SELECT count(*) AS n FROM step_executions")["n"] == 0
    assert '"worker:storage_unhealthy"' in mq.worker_log(worker)
    shown = json.loads(mq.cli("workers", "--json").stdout)
    assert [w["claim_problem"] for w in shown] == [problem]
    stats = mq.cli("stats").stdout
    assert "Workers not claiming (storage)" in stats and "missing (not mounted?)" in stats

    (mount / "outputs").mkdir(parents=True)  # the share is mounted
    wait_for(lambda: mq.one("SELECT count(*) AS n FROM workflow_jobs WHERE job_code = ANY (%s)"
                            " AND status = 'completed'", (codes,))["n"] == 3,
             timeout=60, message="the jobs to run once the mount is back")
    assert mq.one("SELECT claim_problem FROM workers")["claim_problem"] is None
    assert '"worker:storage_healthy"' in mq.worker_log(worker)


def test_claims_pause_while_the_output_disk_is_below_its_floor(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-FLOOR", {"action": "noop"}))
    code = mq.one("SELECT job_code FROM submit_job('T-FLOOR', %s)",
                  (str(mq.input_file("in.bin")),))["job_code"]
    mq.start_worker(output_free_floor_mb=str(10**9))  # more than any disk here has
    job = wait_for(lambda: (j := mq.job(code))["waiting_reason"] and j, timeout=60,
                   message="the job to say why it waits")
    assert job["status"] == "queued" and job["attempt"] == 0
    assert job["waiting_reason"].endswith(
        "MB free, below the floor of 1000000000 MB (output_free_floor_mb)")


def test_each_storage_check_names_the_root_and_the_reason(settings: Settings,
                                                          tmp_path: Path) -> None:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()

    def problem(**changes: object) -> str | None:
        base = {"input_roots": (inputs,), "output_root": outputs}
        return check(settings.replace(**{**base, **changes}).storage)

    assert problem() is None
    assert problem(input_roots=(tmp_path / "gone",)) == (
        f"input root {tmp_path / 'gone'} is missing (not mounted?)")
    plain = tmp_path / "plain"
    plain.write_text("a file")
    assert problem(output_root=plain / "out") == (
        f"output root {plain / 'out'} is missing (not mounted?)")
    assert problem(output_root=plain) == f"output root {plain} is not a folder"
    (outputs / ".staging").rmdir()  # made by the first check; a file takes its place
    (outputs / ".staging").write_text("a file where staging goes")
    assert problem() == f"output root {outputs} is not writable: File exists"
    (outputs / ".staging").unlink()
    below = problem(output_free_floor_mb=10**9)
    assert below is not None and below.startswith(f"output root {outputs} has ")
    assert below.endswith("MB free, below the floor of 1000000000 MB (output_free_floor_mb)")


def test_a_missing_input_on_a_healthy_host_is_still_permanent(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-GONE", {"action": "noop"}))
    path = mq.input_file("soon-gone.bin")
    code = mq.one("SELECT job_code FROM submit_job('T-GONE', %s)", (str(path),))["job_code"]
    path.unlink()
    mq.run_burst()
    job = mq.job(code)
    assert job["status"] == "failed" and job["error_class"] == "permanent"
    assert "soon-gone.bin" in job["error_message"]


def test_memory_admission_floor() -> None:
    assert memory_problem(0) is None and memory_problem(1) is None
    low = memory_problem(10**9)
    assert low is not None and low.startswith("the host has ")
    assert low.endswith("MB of memory available, below the floor of 1000000000 MB "
                        "(min_free_memory_mb)")


def test_a_paused_host_claims_nothing_until_resumed(mq: MediaqEnv) -> None:
    """`mediaq hosts pause HOST`: the host's workers claim nothing new (the jobs say why),
    and claim again once resumed."""
    mq.apply_workflow(diagnostic_workflow("T-HOST-PAUSE", {"action": "noop"}))
    mq.start_worker(host_id="box-1")
    wait_for(lambda: mq.query("SELECT 1 FROM worker_hosts WHERE host = 'box-1'"),
             message="the worker to register its host")
    assert mq.cli("hosts", "pause", "box-1").stdout.strip() == "box-1: claims paused"
    wait_for(lambda: "paused by cli:" in (mq.one(
        "SELECT claim_problem FROM workers WHERE host = 'box-1'")["claim_problem"] or ""),
             timeout=60, message="the worker to see the pause")
    code = mq.submit("T-HOST-PAUSE", mq.input_file("p.bin"))
    wait_for(lambda: "does not claim: paused by" in (mq.job(code)["waiting_reason"] or ""),
             timeout=60, message="the job to say why it waits")
    assert mq.job(code)["attempt"] == 0  # never claimed
    mq.cli("hosts", "resume", "box-1")
    wait_for(lambda: mq.job(code)["status"] == "completed", timeout=60,
             message="the job to run once the host is resumed")
    refused = mq.cli("hosts", "pause", "nowhere", check=False)
    assert refused.returncode != 0 and "host nowhere is not known" in refused.stderr
