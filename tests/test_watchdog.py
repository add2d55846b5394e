"""Hard step deadlines and stall detection (issue 25): a step stuck in native code (the
`sleep_native` diagnostic blocks in the C library's sleep(3), deaf to cancel and
deadlines) is abandoned after timeout_seconds + grace, its job moves as on_failure says,
and the worker goes on; after `recycle_after_abandoned` stuck threads it exits (75) to be
restarted."""

from __future__ import annotations

from typing import Any

from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for


def stuck_workflow(code: str, *, timeout_seconds: int = 600, retry_count: int = 0,
                   on_failure: str = "stop") -> dict[str, Any]:
    return diagnostic_workflow(code, {"action": "sleep_native", "step_name": "Decode",
                                      "parameters": {"seconds": 120},
                                      "timeout_seconds": timeout_seconds,
                                      "on_failure": on_failure}, retry_count=retry_count)


def submit(mq: MediaqEnv, workflow: str, name: str) -> str:
    path = mq.input_file(name)
    return str(mq.one("SELECT job_code FROM submit_job(%s, %s)", (workflow, str(path)))
               ["job_code"])


def finished(mq: MediaqEnv, code: str) -> dict[str, Any] | None:
    job = mq.job(code)
    return job if job["status"] in ("completed", "failed") else None


def test_a_step_stuck_in_native_code_is_abandoned_and_the_worker_goes_on(
        mq: MediaqEnv) -> None:
    mq.apply_workflow(stuck_workflow("T-STUCK", timeout_seconds=2))
    mq.apply_workflow(diagnostic_workflow("T-FINE", {"action": "noop"}))
    stuck = submit(mq, "T-STUCK", "stuck.bin")
    worker = mq.start_worker("--limits", "cpu=1", step_timeout_grace_seconds="1")
    job = wait_for(lambda: finished(mq, stuck), timeout=60, message="the stuck job to end")
    assert job["status"] == "failed"
    assert "no result 1 s after its deadline; the step was abandoned" in job["error_message"]
    assert job["lease_expires_at"] is None
    execution = mq.one("SELECT status, error_class FROM step_executions WHERE job_id = %s",
                       (job["id"],))
    assert execution == {"status": "failed", "error_class": "exhausted"}
    # The only slot was the stuck step's: it was given back, and the same process runs
    # the next job while its stuck thread still sleeps.
    fine = submit(mq, "T-FINE", "fine.bin")
    done = wait_for(lambda: finished(mq, fine), timeout=60, message="the next job")
    assert done["status"] == "completed"
    assert done["worker_id"] == job["worker_id"]
    assert worker.poll() is None
    assert '"worker:step_abandoned"' in mq.worker_log(worker)


def test_a_stalled_step_fails_and_a_worker_with_stuck_threads_recycles_itself(
        mq: MediaqEnv) -> None:
    # The step reports progress once, then blocks: no movement for stall_seconds fails it
    # (long before its timeout). Its retry stalls too: the second stuck thread makes the
    # worker drain and exit with 75 (EX_TEMPFAIL) for systemd to start a fresh one.
    mq.apply_workflow(stuck_workflow("T-STALL", retry_count=1, on_failure="retry"))
    code = submit(mq, "T-STALL", "stall.bin")
    worker = mq.start_worker("--limits", "cpu=1", stall_seconds="1",
                             recycle_after_abandoned="2")
    job = wait_for(lambda: finished(mq, code), timeout=60, message="the stalled job to end")
    assert job["status"] == "failed"
    assert "its progress has not moved for 1 s (stall_seconds)" in job["error_message"]
    executions = mq.query("SELECT error_class FROM step_executions WHERE job_id = %s "
                          "ORDER BY id", (job["id"],))
    assert [e["error_class"] for e in executions] == ["transient", "exhausted"]
    assert worker.wait(timeout=60) == 75
    log = mq.worker_log(worker)
    assert '"worker:recycling"' in log and '"worker:exit_with_stuck_steps"' in log
