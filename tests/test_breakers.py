"""Circuit breakers on actions (issue 25): a `fail` action failing transiently across 20
jobs opens its breaker after N failures, the other jobs wait (no retry spent, a waiting
reason that says why and until when), a probe closes it once the action recovers;
operators see and close breakers through the CLI, the API and /metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.config import Settings
from mediaq.worker.breakers import Breakers
from tests.helpers import MediaqEnv, claim_in_process, diagnostic_workflow, wait_for

WORKFLOW = "T-BREAKER"


def flaky_workflow(flag: Path) -> dict[str, Any]:
    """One step of `fail` that fails transiently while ``flag`` exists."""
    return diagnostic_workflow(WORKFLOW, {
        "action": "fail", "step_name": "Encode", "on_failure": "retry",
        "parameters": {"kind": "transient", "message": "encoder unavailable",
                       "while_exists": str(flag)}}, retry_count=5)


def submit_many(mq: MediaqEnv, count: int) -> list[str]:
    codes = []
    for i in range(count):
        path = mq.input_file(f"in{i}.bin")
        codes.append(mq.one("SELECT job_code FROM submit_job(%s, %s)",
                            (WORKFLOW, str(path)))["job_code"])
    return codes


def breaker(mq: MediaqEnv) -> dict[str, Any] | None:
    """The host breaker of `fail` (a single host here: the action-wide one stays closed)."""
    rows = mq.query("SELECT * FROM action_breakers WHERE action = 'fail' AND host <> ''")
    return rows[0] if rows else None


def failed_executions(mq: MediaqEnv) -> int:
    return int(mq.one("SELECT count(*) AS n FROM step_executions "
                      "WHERE status = 'failed' AND error_message LIKE '%%encoder%%'")["n"])


def test_twenty_jobs_the_breaker_opens_the_rest_wait_and_a_probe_closes_it(
        mq: MediaqEnv) -> None:
    flag = mq.root / "encoder-broken"
    flag.write_text("down")
    mq.apply_workflow(flaky_workflow(flag))
    codes = submit_many(mq, 20)
    mq.start_worker("--limits", "cpu=1", action_breaker_threshold="3",
                    action_breaker_window_seconds="120",
                    action_breaker_cooldown_seconds="3")

    opened = wait_for(lambda: (b := breaker(mq)) is not None and b["state"] == "open" and b,
                      timeout=60, message="the breaker of `fail` to open")
    assert opened["failures"] == 3
    assert opened["last_error"] == "encoder unavailable"
    # The jobs behind wait for the breaker instead of failing or spending retries.
    waiting = wait_for(lambda: mq.query(
        "SELECT job_code, waiting_reason, retry_after FROM workflow_jobs "
        "WHERE waiting_reason LIKE 'circuit breaker of action ''fail''%%'"),
        timeout=30, message="a job waiting for the breaker")
    reason = waiting[0]["waiting_reason"]
    assert "open after 3 transient failure(s), last: encoder unavailable" in reason
    assert "waiting until" in reason and reason.endswith(" UTC")
    flag.unlink()  # the encoder recovers: the probe after the cool-down succeeds

    wait_for(lambda: mq.one("SELECT count(*) AS n FROM workflow_jobs WHERE status = "
                            "'completed'")["n"] == 20, timeout=120,
             message="all 20 jobs to complete")
    closed = breaker(mq)
    assert closed is not None and closed["state"] == "closed"
    # Each failure is one that opened the breaker or a probe that re-opened it: no job
    # burnt its retries against an open breaker.
    reopened = closed["times_opened"] - 1
    assert failed_executions(mq) == 3 + reopened
    retries = mq.one("SELECT sum(retry_count) AS n, count(*) FILTER (WHERE retry_count = 0) "
                     "AS untouched FROM workflow_jobs WHERE job_code = ANY (%s)", (codes,))
    assert retries["n"] == 3 + reopened
    assert retries["untouched"] >= 17 - reopened
    logs = [r["log"] for r in mq.query("SELECT log FROM workflow_jobs")]
    assert sum("Waiting: circuit breaker of action 'fail'" in log for log in logs) >= 16
    assert any("Probing the circuit breaker of action 'fail'" in log for log in logs)


def test_operators_see_open_breakers_and_close_them(mq: MediaqEnv) -> None:
    flag = mq.root / "encoder-broken"
    flag.write_text("down")
    mq.apply_workflow(flaky_workflow(flag))
    codes = submit_many(mq, 4)
    mq.start_worker("--limits", "cpu=1", action_breaker_threshold="2",
                    action_breaker_cooldown_seconds="3600")
    wait_for(lambda: mq.one("SELECT count(*) AS n FROM workflow_jobs WHERE waiting_reason "
                            "LIKE 'circuit breaker%%'")["n"] >= 2,
             timeout=60, message="jobs waiting for an open breaker")

    listed = json.loads(mq.cli("breakers", "--json").stdout)
    assert [(b["action"], b["state"], b["failures"]) for b in listed] == [("fail", "open", 2)]
    assert "Circuit breakers on actions" in mq.cli("stats").stdout
    assert json.loads(mq.cli("stats", "--json").stdout)["open_breakers"][0]["action"] == "fail"

    _, base = mq.start_web()
    token = mq.cli("tokens", "create", "--role", "operator", "--name", "ops").stdout.split()[-1]
    auth = {"Authorization": f"Bearer {token}"}
    shown = requests.get(f"{base}/api/media/breakers", headers=auth, timeout=10).json()
    assert [(b["action"], b["state"]) for b in shown["data"]] == [("fail", "open")]
    metrics = requests.get(f"{base}/metrics", headers=auth, timeout=10).text
    host = listed[0]["host"]
    assert f'mediaq_action_breaker_open{{action="fail",host="{host}"}} 1.0' in metrics

    flag.unlink()
    answer = requests.post(f"{base}/api/media/breakers/fail/close", headers=auth, timeout=10)
    assert answer.status_code == 200 and answer.json()["closed"] == 1
    # Closing releases the waiting jobs at once (not after the hour-long cool-down).
    wait_for(lambda: mq.one("SELECT count(*) AS n FROM workflow_jobs WHERE job_code = ANY (%s)"
                            " AND status = 'completed'", (codes,))["n"] == 4,
             timeout=60, message="the released jobs to complete")
    assert mq.cli("breakers").stdout.strip() == "no open breakers"
    assert "no open breaker for action 'fail'" in mq.cli("breakers", "close", "fail").stdout


def test_one_hosts_failures_open_its_breaker_two_hosts_open_the_action_wide_one(
        pool: ConnectionPool[db.Connection], settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(b"x")
    handle, _ = claim_in_process(pool, "T-HOSTS", source, {"action": "noop"})
    on = {host: Breakers(settings.replace(host_id=host, action_breaker_threshold=2))
          for host in ("alpha", "beta")}
    on["alpha"].failed(handle, "transcode_video", "nvenc: no device")
    on["alpha"].failed(handle, "transcode_video", "nvenc: no device")

    def states() -> dict[str, str]:
        with db.transaction(pool) as conn:
            return {r["host"]: r["state"] for r in db.fetch_all(conn, "breakers_list",
                                                                 {"all": True})}

    # alpha's own breaker opens; the action-wide one waits for a second failing host.
    assert states() == {"alpha": "open", None: "closed"}
    assert on["beta"]._check(handle, "transcode_video") is None
    blocked = on["alpha"]._check(handle, "transcode_video")
    assert blocked is not None and blocked.host == "alpha"
    assert "on alpha is open after 2 transient failure(s), last: nvenc: no device" in \
        blocked.reason
    on["beta"].failed(handle, "transcode_video", "nvenc: no device")
    assert states() == {"alpha": "open", "beta": "closed", None: "open"}
    blocked = on["beta"]._check(handle, "transcode_video")
    assert blocked is not None and "on every host is open after 3" in blocked.reason
    # A success on beta closes beta's and the action-wide breaker; alpha's stays open.
    on["beta"].succeeded(handle, "transcode_video")
    assert states() == {"alpha": "open", "beta": "closed", None: "closed"}
